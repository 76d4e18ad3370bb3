// What each robot holds: the reference's deploy_state (path → file, version, the job that installed it).
import { useState, type FormEvent } from 'react';
import { Field, Notice } from '../shared/components';
import { usePolling } from '../shared/hooks';
import type { ViewProps } from './App';
import type { DeployTargetRow } from './types';

export function DeployStateView({ api, go, filter }: ViewProps) {
  const [input, setInput] = useState(filter.robot_id ?? '');
  const [robot, setRobot] = useState(filter.robot_id ?? '');
  const state = usePolling(
    async () => (robot ? api.get<DeployTargetRow[]>(`/deploy_state/${encodeURIComponent(robot)}`) : []),
    5000,
    [robot],
  );
  const submit = (e: FormEvent) => {
    e.preventDefault();
    setRobot(input.trim());
  };

  return (
    <>
      <h2>Robot files</h2>
      <section className="panel">
        <form onSubmit={submit} className="form-grid">
          <Field label="Robot id">
            <input value={input} onChange={(e) => setInput(e.target.value)} placeholder="robot01" required />
          </Field>
          <div>
            <button type="submit">Show files</button>
          </div>
        </form>
      </section>
      {state.error ? <Notice tone="error">Could not load the robot's files: {state.error}</Notice> : null}
      {robot ? (
        <section className="panel" aria-labelledby="ds-h">
          <h3 id="ds-h">
            Files deployed to <span className="mono">{robot}</span>
          </h3>
          <div className="table-wrap">
            <table aria-label={`Files deployed to ${robot}`}>
              <thead>
                <tr>
                  <th style={{ width: '34%' }}>Deploy path</th>
                  <th style={{ width: '30%' }} className="hide-narrow">Object</th>
                  <th style={{ width: '16%' }}>Updated</th>
                  <th style={{ width: '20%' }}>Job</th>
                </tr>
              </thead>
              <tbody>
                {state.data?.map((t) => (
                  <tr key={t.deploy_path}>
                    <td className="mono" title={t.deploy_path}>
                      {t.deploy_path}
                    </td>
                    <td className="mono hide-narrow" title={t.s3_object_name}>
                      {t.s3_object_name}
                    </td>
                    <td>{new Date(t.updated_at).toLocaleString()}</td>
                    <td className="mono" title={t.job_id}>
                      <button type="button" className="secondary" onClick={() => go('jobs', { robot_id: robot })}>
                        Jobs
                      </button>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          {state.data && state.data.length === 0 ? <p className="muted">Nothing deployed to this robot yet.</p> : null}
        </section>
      ) : null}
    </>
  );
}
