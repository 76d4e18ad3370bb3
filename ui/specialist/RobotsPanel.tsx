// The center's robots: connected or not, the pinned host key, the last inventory and the last robot sync. Robot
// sync only visits connected robots; connecting makes the SSH handshake (the first contact pins the host key).
import { useState } from 'react';
import { ApiError, type ApiClient } from '../shared/api';
import { Notice, StatusBadge } from '../shared/components';
import { usePolling } from '../shared/hooks';
import type { RobotView } from './types';

const when = (iso: string | null | undefined) => (iso ? new Date(iso).toLocaleString() : 'never');

export function RobotsPanel({ api }: { api: ApiClient }) {
  const robots = usePolling(() => api.get<{ robots: RobotView[] }>('/robots'), 3000);
  const [pending, setPending] = useState<string | null>(null);
  const [message, setMessage] = useState<{ tone: 'error' | 'success'; text: string } | null>(null);

  const toggle = async (r: RobotView) => {
    setPending(r.robot_id);
    setMessage(null);
    const action = r.connected ? 'disconnect' : 'connect';
    try {
      await api.post(`/robots/${encodeURIComponent(r.robot_id)}/${action}`);
      setMessage({ tone: 'success', text: `${r.robot_id} ${r.connected ? 'disconnected' : 'connected'}.` });
      robots.refresh();
    } catch (e) {
      setMessage({ tone: 'error', text: `Could not ${action} ${r.robot_id}: ${e instanceof ApiError ? e.message : String(e)}` });
    } finally {
      setPending(null);
    }
  };

  return (
    <>
      <h2>Robots</h2>
      {message ? <Notice tone={message.tone}>{message.text}</Notice> : null}
      {robots.error ? <Notice tone="error">Could not load robots: {robots.error}</Notice> : null}
      <section className="panel">
        <div className="table-wrap">
          <table aria-label="Robots">
            <thead>
              <tr>
                <th style={{ width: '14%' }}>Robot</th>
                <th style={{ width: '16%' }} className="hide-narrow">Address</th>
                <th style={{ width: '13%' }}>State</th>
                <th style={{ width: '19%' }} className="hide-narrow">Last inventory</th>
                <th style={{ width: '22%' }}>Last sync</th>
                <th style={{ width: '16%' }}>Actions</th>
              </tr>
            </thead>
            <tbody>
              {robots.data?.robots.map((r) => (
                <tr key={r.robot_id} data-robot-id={r.robot_id} data-connected={String(r.connected)}>
                  <td>{r.robot_id}</td>
                  <td className="mono hide-narrow" title={r.host_key_sha256 ?? 'host key not pinned yet'}>
                    {r.username}@{r.host}:{r.port}
                  </td>
                  <td>
                    <StatusBadge status={r.connected ? 'CONNECTED' : 'NOT CONNECTED'} />
                  </td>
                  <td className="hide-narrow">{when(r.last_inventory_at)}</td>
                  <td className="wrap">
                    {r.last_sync ? (
                      <>
                        {r.last_sync.status ?? ''} <span className="muted">{when(r.last_sync.at)}</span>
                        {r.last_sync.error ? <div className="muted">{r.last_sync.error}</div> : null}
                      </>
                    ) : (
                      <span className="muted">never</span>
                    )}
                  </td>
                  <td>
                    <button
                      type="button"
                      className={r.connected ? 'secondary' : undefined}
                      disabled={pending === r.robot_id}
                      onClick={() => void toggle(r)}
                      aria-label={`${r.connected ? 'Disconnect' : 'Connect'} ${r.robot_id}`}
                    >
                      {pending === r.robot_id ? '…' : r.connected ? 'Disconnect' : 'Connect'}
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
        {robots.data && robots.data.robots.length === 0 ? <p className="muted">This center has no robots yet.</p> : null}
      </section>
    </>
  );
}
