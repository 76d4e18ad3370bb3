// Rollouts: one file to many robots in waves, with a success threshold to advance, a concurrency cap and an
// abort threshold. The list and the selected rollout's per-wave progress refresh live; pause, resume, cancel.
import { useState, type FormEvent } from 'react';
import { DataTable, Field, Notice, Progress, StatusBadge } from '../shared/components';
import { useAction, usePolling } from '../shared/hooks';
import type { ViewProps } from './App';
import type { FileRow } from './types';

type Counts = Partial<Record<string, number>>;
interface RolloutRow {
  rollout_id: string;
  status: string;
  paused: boolean;
  current_wave: number;
  reason: string | null;
  s3_object_name: string;
  filename: string;
  deploy_path: string;
  robots: number;
  wave_sizes: number[];
  created_at: string;
  workflow_id: string;
  counts?: Counts;
  waves?: Array<{ wave: number; size: number; counts: Counts; queued: number; awaiting_robot: number; in_flight: number }>;
}

const FINISHED = (s: string) => s !== 'RUNNING' && s !== 'PAUSED';
const numbers = (s: string) => s.split(',').map((x) => Number(x.trim())).filter((n) => Number.isFinite(n) && n > 0);

function CreateRollout({ api, onCreated }: Pick<ViewProps, 'api'> & { onCreated: (id: string) => void }) {
  const files = usePolling(() => api.get<FileRow[]>('/file/list?s3_bucket=files'), 10000);
  const [object, setObject] = useState('');
  const [deployPath, setDeployPath] = useState('');
  const [robots, setRobots] = useState('');
  const [prefix, setPrefix] = useState('');
  const [waves, setWaves] = useState('10, 50, 100');
  const [threshold, setThreshold] = useState('90');
  const [concurrency, setConcurrency] = useState('50');
  const [abortPct, setAbortPct] = useState('20');
  const { pending, message, run } = useAction();

  const submit = (e: FormEvent) => {
    e.preventDefault();
    const ids = robots.split(',').map((r) => r.trim()).filter(Boolean);
    const body = {
      s3_bucket: 'files',
      s3_object_name: object,
      deploy_path: deployPath,
      target: ids.length ? { robot_ids: ids } : { selector: { id_prefix: prefix.trim() } },
      waves: numbers(waves),
      success_threshold_pct: Number(threshold),
      max_concurrency: Number(concurrency),
      ...(abortPct ? { abort_after_failure_pct: Number(abortPct) } : {}),
    };
    return run(
      true,
      async () => {
        const r = await api.post<RolloutRow>('/rollouts', body);
        onCreated(r.rollout_id);
      },
      'Rollout refused',
    );
  };

  return (
    <section className="panel" aria-labelledby="new-rollout-h">
      <h3 id="new-rollout-h">New rollout</h3>
      <form onSubmit={(e) => void submit(e)}>
        <div className="form-grid">
          <Field label="File">
            <select value={object} onChange={(e) => setObject(e.target.value)} required>
              <option value="">choose a file…</option>
              {files.data?.map((f) => (
                <option key={f.s3_object_name} value={f.s3_object_name}>
                  {f.file_name} ({f.s3_object_name})
                </option>
              ))}
            </select>
          </Field>
          <Field label="Deploy path" hint="Absolute; {robot_id} is replaced by each robot's id">
            <input value={deployPath} onChange={(e) => setDeployPath(e.target.value)} required />
          </Field>
          <Field label="Robot ids" hint="Comma-separated; leave empty to use the prefix">
            <input value={robots} onChange={(e) => setRobots(e.target.value)} />
          </Field>
          <Field label="Robot id prefix" hint="Every provisioned robot whose id starts with it">
            <input value={prefix} onChange={(e) => setPrefix(e.target.value)} />
          </Field>
          <Field label="Waves (% of robots)" hint="Cumulative, ascending, e.g. 1, 10, 100">
            <input value={waves} onChange={(e) => setWaves(e.target.value)} required />
          </Field>
          <Field label="Success threshold (%)" hint="Completed share of a wave needed to start the next">
            <input type="number" min={0} max={100} value={threshold} onChange={(e) => setThreshold(e.target.value)} required />
          </Field>
          <Field label="Concurrency cap">
            <input type="number" min={1} value={concurrency} onChange={(e) => setConcurrency(e.target.value)} required />
          </Field>
          <Field label="Abort at failures (%)" hint="Cancels what is not yet done">
            <input type="number" min={0} max={100} value={abortPct} onChange={(e) => setAbortPct(e.target.value)} />
          </Field>
          <div>
            <button type="submit" disabled={pending !== null}>
              Start rollout
            </button>
          </div>
        </div>
      </form>
      {message ? <Notice tone={message.tone}>{message.text}</Notice> : null}
    </section>
  );
}

function RolloutDetail({ api, config, id }: Pick<ViewProps, 'api' | 'config'> & { id: string }) {
  const r = usePolling(() => api.get<RolloutRow>(`/rollouts/${encodeURIComponent(id)}`), 1500, [id]);
  const { pending, message, run } = useAction<'pause' | 'resume' | 'cancel'>();
  const control = (action: 'pause' | 'resume' | 'cancel') =>
    run(
      action,
      async () => {
        await api.post(`/rollouts/${encodeURIComponent(id)}/${action}`, {});
        r.refresh();
        return `${action[0].toUpperCase()}${action.slice(1)} requested.`;
      },
      `${action[0].toUpperCase()}${action.slice(1)} failed`,
    );
  const v = r.data;
  return (
    <section className="panel" aria-label={`Rollout ${id}`} data-rollout-id={id} data-status={v?.status ?? ''}>
      <h3>
        Rollout <span className="mono">{id}</span> {v ? <StatusBadge status={v.paused && v.status === 'RUNNING' ? 'PAUSED' : v.status} /> : null}
      </h3>
      {r.error ? <Notice tone="error">{r.error}</Notice> : null}
      {message ? <Notice tone={message.tone}>{message.text}</Notice> : null}
      {v ? (
        <>
          <p>
            {v.filename} → <span className="mono">{v.deploy_path}</span> on {v.robots} robots; wave {v.current_wave + 1} of {v.wave_sizes.length}.
            {v.reason ? <span className="muted"> {v.reason}</span> : null}
          </p>
          {v.waves?.map((w) => (
            <Progress
              key={w.wave}
              label={`Wave ${w.wave + 1} completed`}
              value={w.counts.COMPLETED ?? 0}
              max={w.size}
              text={`${w.counts.COMPLETED ?? 0} / ${w.size} completed, ${w.counts.FAILED ?? 0} failed, ${w.in_flight} in flight`}
            />
          ))}
          <div className="row">
            {!FINISHED(v.status) && !v.paused ? (
              <button type="button" className="secondary" onClick={() => void control('pause')} disabled={pending !== null}>
                Pause
              </button>
            ) : null}
            {!FINISHED(v.status) && v.paused ? (
              <button type="button" onClick={() => void control('resume')} disabled={pending !== null}>
                Resume
              </button>
            ) : null}
            {!FINISHED(v.status) ? (
              <button type="button" className="danger" onClick={() => void control('cancel')} disabled={pending !== null}>
                Cancel rollout
              </button>
            ) : null}
            <a href={`${config.temporalWebUrl}/namespaces/${config.temporalNamespace}/workflows/${encodeURIComponent(v.workflow_id)}`} target="_blank" rel="noreferrer">
              This rollout in Temporal Web
            </a>
          </div>
        </>
      ) : null}
    </section>
  );
}

export function RolloutsView({ api, config }: ViewProps) {
  const list = usePolling(() => api.get<{ rollouts: RolloutRow[] }>('/rollouts?limit=20'), 2000);
  const [selected, setSelected] = useState<string | null>(null);
  return (
    <>
      <h2>Rollouts</h2>
      <CreateRollout api={api} onCreated={(id) => (setSelected(id), list.refresh())} />
      {selected ? <RolloutDetail api={api} config={config} id={selected} /> : null}
      {list.error ? <Notice tone="error">Could not load rollouts: {list.error}</Notice> : null}
      <section className="panel" aria-labelledby="rollouts-h">
        <h3 id="rollouts-h">Recent rollouts</h3>
        <DataTable
          label="Rollouts"
          rows={list.data?.rollouts}
          rowKey={(r) => r.rollout_id}
          rowData={(r) => ({ 'rollout-id': r.rollout_id, status: r.status })}
          empty="No rollouts yet."
          columns={[
            { header: 'Rollout', width: '30%', cellClass: 'mono', title: (r) => r.rollout_id, cell: (r) => r.rollout_id },
            { header: 'File', width: '25%', hideNarrow: true, title: (r) => r.s3_object_name, cell: (r) => r.filename },
            { header: 'Robots', width: '12%', cell: (r) => r.robots },
            { header: 'Status', width: '15%', cell: (r) => <StatusBadge status={r.paused && r.status === 'RUNNING' ? 'PAUSED' : r.status} /> },
            {
              header: 'Actions',
              width: '18%',
              cell: (r) => (
                <button type="button" className="secondary" onClick={() => setSelected(r.rollout_id)} aria-label={`Show rollout ${r.rollout_id}`}>
                  Show
                </button>
              ),
            },
          ]}
        />
      </section>
    </>
  );
}
