// The robot registry (admin): provision a robot (its MQTT credential, deploy roots, and its daemon's config,
// offered once as a download: it holds the robot's password), list the provisioned robots, remove one.
import { useState, type FormEvent } from 'react';
import { DataTable, Field, Notice } from '../shared/components';
import { useAction, usePolling } from '../shared/hooks';
import type { ViewProps } from './App';

interface RobotRow {
  robot_id: string;
  deploy_roots: string[];
  center_id: string | null;
  created_at: string | null;
}
interface AddedRobot {
  robot_id: string;
  deploy_roots: string[];
  daemon_config: string;
}

/** Offers `text` as a file download named `name` (nothing leaves the browser). */
function download(name: string, text: string): void {
  const url = URL.createObjectURL(new Blob([text], { type: 'text/yaml' }));
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  a.click();
  URL.revokeObjectURL(url);
}

export function RobotsView({ api, go }: ViewProps) {
  const robots = usePolling(() => api.get<RobotRow[]>('/robots'), 5000);
  const [id, setId] = useState('');
  const [roots, setRoots] = useState('');
  const [added, setAdded] = useState<AddedRobot | null>(null);
  const { pending, message, run } = useAction<string>();

  const add = (e: FormEvent) => {
    e.preventDefault();
    setAdded(null);
    return run(
      '',
      async () => {
        const body = { robot_id: id.trim(), deploy_roots: roots.split(',').map((r) => r.trim()).filter(Boolean) };
        const r = await api.post<AddedRobot>('/robots', body);
        setAdded(r);
        setId('');
        setRoots('');
        robots.refresh();
        return `Provisioned ${r.robot_id}. Download its daemon config now: it holds the robot's password and is shown once.`;
      },
      'Provisioning refused',
    );
  };

  const remove = (robotId: string) =>
    run(
      robotId,
      async () => {
        await api.delete(`/robots/${encodeURIComponent(robotId)}`);
        robots.refresh();
        return `Removed ${robotId}: its credential is revoked.`;
      },
      `Removal of ${robotId} failed`,
    );

  return (
    <>
      <h2>Robot registry</h2>
      <section className="panel" aria-labelledby="add-robot-h">
        <h3 id="add-robot-h">Provision a robot</h3>
        <form onSubmit={(e) => void add(e)} className="form-grid">
          <Field label="New robot id">
            <input value={id} onChange={(e) => setId(e.target.value)} required />
          </Field>
          <Field label="Deploy roots" hint="Absolute directories, comma-separated">
            <input value={roots} onChange={(e) => setRoots(e.target.value)} placeholder="/opt/robot/files" required />
          </Field>
          <div>
            <button type="submit" disabled={pending !== null}>
              Provision
            </button>
          </div>
        </form>
        {added ? (
          <div className="row" style={{ marginTop: 8 }}>
            <button type="button" onClick={() => download(`${added.robot_id}-ota-config.yaml`, added.daemon_config)}>
              Download daemon config of {added.robot_id}
            </button>
          </div>
        ) : null}
      </section>
      {message ? <Notice tone={message.tone}>{message.text}</Notice> : null}
      {robots.error ? <Notice tone="error">Could not load the registry: {robots.error}</Notice> : null}
      <section className="panel" aria-labelledby="robots-h">
        <h3 id="robots-h">Provisioned robots</h3>
        <DataTable
          label="Provisioned robots"
          rows={robots.data}
          rowKey={(r) => r.robot_id}
          rowData={(r) => ({ 'robot-id': r.robot_id })}
          empty="No robot is provisioned yet."
          columns={[
            { header: 'Robot', width: '20%', cell: (r) => r.robot_id },
            { header: 'Deploy roots', width: '40%', cellClass: 'mono', title: (r) => r.deploy_roots.join(', '), cell: (r) => r.deploy_roots.join(', ') },
            { header: 'Center', width: '15%', hideNarrow: true, cell: (r) => r.center_id ?? '—' },
            {
              header: 'Actions',
              width: '25%',
              cell: (r) => (
                <div className="row">
                  <button type="button" className="secondary" onClick={() => go('robots', { robot_id: r.robot_id })} aria-label={`Files of ${r.robot_id}`}>
                    Files
                  </button>
                  <button type="button" className="danger" onClick={() => void remove(r.robot_id)} disabled={pending === r.robot_id} aria-label={`Remove ${r.robot_id}`}>
                    Remove
                  </button>
                </div>
              ),
            },
          ]}
        />
      </section>
    </>
  );
}
