// What each robot holds: the reference's deploy_state (path → file, version, the job that installed it).
import { useState, type FormEvent } from 'react';
import { DataTable, Field, Notice } from '../shared/components';
import { usePolling } from '../shared/hooks';
import type { ViewProps } from './App';
import type { DeployTargetRow } from './types';

export function DeployStateView({ api, go, filter }: ViewProps) {
  const [input, setInput] = useState(filter.robot_id ?? '');
  const [robot, setRobot] = useState(filter.robot_id ?? '');
  const state = usePolling<DeployTargetRow[]>(
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
          <DataTable
            label={`Files deployed to ${robot}`}
            rows={state.data}
            rowKey={(t) => t.deploy_path}
            empty="Nothing deployed to this robot yet."
            columns={[
              { header: 'Deploy path', width: '34%', cellClass: 'mono', title: (t) => t.deploy_path, cell: (t) => t.deploy_path },
              { header: 'Object', width: '30%', hideNarrow: true, cellClass: 'mono', title: (t) => t.s3_object_name, cell: (t) => t.s3_object_name },
              { header: 'Updated', width: '16%', cell: (t) => new Date(t.updated_at).toLocaleString() },
              {
                header: 'Job',
                width: '20%',
                cellClass: 'mono',
                title: (t) => t.job_id,
                cell: () => (
                  <button type="button" className="secondary" onClick={() => go('jobs', { robot_id: robot })}>
                    Jobs
                  </button>
                ),
              },
            ]}
          />
        </section>
      ) : null}
    </>
  );
}
