// Robot sync ("Update Robots"): per robot, live progress bars (files and bytes) while it runs, then its result:
// uploaded, already in place, failed and why; robots not connected or unreachable are shown as skipped.
import { ApiError, type ApiClient } from '../shared/api';
import { Notice, Progress, StatusBadge, formatBytes } from '../shared/components';
import { usePolling } from '../shared/hooks';
import { workflowUrl, type RobotSyncView, type UiConfig } from './types';

async function latest(api: ApiClient): Promise<RobotSyncView | null> {
  try {
    return await api.get<RobotSyncView>('/robots/sync');
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) return null;
    throw e;
  }
}

export function RobotSyncPanel({ api, config }: { api: ApiClient; config: UiConfig }) {
  const run = usePolling(() => latest(api), 1000);
  const v = run.data;
  const results = new Map((v?.result?.robots ?? []).map((r) => [r.robotId, r]));
  const robots = v?.progress?.robots ?? [];

  return (
    <>
      <h2>Robot sync</h2>
      {run.error ? <Notice tone="error">Could not load the robot sync status: {run.error}</Notice> : null}
      {run.data === null && !run.error ? <p className="muted">No robot sync has run yet. Press Update Robots.</p> : null}
      {v ? (
        <>
          <section className="panel" aria-label="Latest robot sync" data-status={v.status}>
            <div className="row">
              <StatusBadge status={v.status} />
              <a href={workflowUrl(config, v.workflow_id)} target="_blank" rel="noreferrer">
                This run in Temporal Web
              </a>
            </div>
            {v.result ? (
              <p aria-label="Robot sync totals">
                Uploaded {v.result.totals.uploaded.files} files ({formatBytes(v.result.totals.uploaded.bytes)}), {v.result.totals.skipped.files} already in
                place, {v.result.totals.failed.files} failed.
              </p>
            ) : null}
            {v.error ? <Notice tone="error">The robot sync failed: {v.error}</Notice> : null}
          </section>
          {robots.map((p) => {
            const res = results.get(p.robotId);
            const status = res?.status ?? p.status;
            return (
              <section key={p.robotId} className="panel" aria-label={`Robot ${p.robotId}`} data-robot-id={p.robotId} data-status={status}>
                <h3>
                  {p.robotId} <StatusBadge status={status} />
                </h3>
                {status === 'waiting' || status === 'syncing' || p.files.total > 0 ? (
                  <>
                    <Progress label={`${p.robotId} files`} value={p.files.done} max={p.files.total} text={`${p.files.done} / ${p.files.total} files`} />
                    <Progress
                      label={`${p.robotId} bytes`}
                      value={p.bytes.done}
                      max={p.bytes.total}
                      text={`${formatBytes(p.bytes.done)} / ${formatBytes(p.bytes.total)}`}
                    />
                  </>
                ) : null}
                {res?.upload ? (
                  <p>
                    Uploaded {res.upload.uploaded.files} ({formatBytes(res.upload.uploaded.bytes)}), already in place {res.upload.skipped.files}, failed{' '}
                    {res.upload.failed.files}.
                  </p>
                ) : null}
                {res?.upload?.failed.errors.length ? (
                  <Notice tone="error">
                    {res.upload.failed.errors.map((f) => (
                      <div key={f.path}>
                        <span className="mono">{f.path}</span>: {f.error}
                      </div>
                    ))}
                  </Notice>
                ) : null}
                {res?.error ? <Notice tone={status === 'not connected' ? 'info' : 'error'}>{res.error}</Notice> : null}
              </section>
            );
          })}
        </>
      ) : null}
    </>
  );
}
