// The center's robots: connected or not, the pinned host key, the last inventory and the last robot sync. Robot
// sync only visits connected robots; connecting makes the SSH handshake (the first contact pins the host key).
import type { ApiClient } from '../shared/api';
import { DataTable, Notice, StatusBadge } from '../shared/components';
import { useAction, usePolling } from '../shared/hooks';
import type { RobotView } from './types';

const when = (iso: string | null | undefined) => (iso ? new Date(iso).toLocaleString() : 'never');

export function RobotsPanel({ api }: { api: ApiClient }) {
  const robots = usePolling(() => api.get<{ robots: RobotView[] }>('/robots'), 3000);
  const { pending, message, run } = useAction<string>();

  const toggle = (r: RobotView) => {
    const action = r.connected ? 'disconnect' : 'connect';
    return run(
      r.robot_id,
      async () => {
        await api.post(`/robots/${encodeURIComponent(r.robot_id)}/${action}`);
        robots.refresh();
        return `${r.robot_id} ${r.connected ? 'disconnected' : 'connected'}.`;
      },
      `Could not ${action} ${r.robot_id}`,
    );
  };

  return (
    <>
      <h2>Robots</h2>
      {message ? <Notice tone={message.tone}>{message.text}</Notice> : null}
      {robots.error ? <Notice tone="error">Could not load robots: {robots.error}</Notice> : null}
      <section className="panel">
        <DataTable
          label="Robots"
          rows={robots.data?.robots}
          rowKey={(r) => r.robot_id}
          rowData={(r) => ({ 'robot-id': r.robot_id, connected: String(r.connected) })}
          empty="This center has no robots yet."
          columns={[
            { header: 'Robot', width: '14%', cell: (r) => r.robot_id },
            {
              header: 'Address',
              width: '16%',
              hideNarrow: true,
              cellClass: 'mono',
              title: (r) => r.host_key_sha256 ?? 'host key not pinned yet',
              cell: (r) => `${r.username}@${r.host}:${r.port}`,
            },
            { header: 'State', width: '13%', cell: (r) => <StatusBadge status={r.connected ? 'CONNECTED' : 'NOT CONNECTED'} /> },
            { header: 'Last inventory', width: '19%', hideNarrow: true, cell: (r) => when(r.last_inventory_at) },
            {
              header: 'Last sync',
              width: '22%',
              cellClass: 'wrap',
              cell: (r) =>
                r.last_sync ? (
                  <>
                    {r.last_sync.status ?? ''} <span className="muted">{when(r.last_sync.at)}</span>
                    {r.last_sync.error ? <div className="muted">{r.last_sync.error}</div> : null}
                  </>
                ) : (
                  <span className="muted">never</span>
                ),
            },
            {
              header: 'Actions',
              width: '16%',
              cell: (r) => (
                <button
                  type="button"
                  className={r.connected ? 'secondary' : undefined}
                  disabled={pending === r.robot_id}
                  onClick={() => void toggle(r)}
                  aria-label={`${r.connected ? 'Disconnect' : 'Connect'} ${r.robot_id}`}
                >
                  {pending === r.robot_id ? '…' : r.connected ? 'Disconnect' : 'Connect'}
                </button>
              ),
            },
          ]}
        />
      </section>
    </>
  );
}
