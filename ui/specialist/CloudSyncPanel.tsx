// Cloud sync ("Synchronize"): the latest run, its current step, live RF download progress (files and bytes), and
// a result the specialist can act on: what was sent and downloaded, what failed and why, or "outdated app".
import { ApiError, type ApiClient } from '../shared/api';
import { Notice, Progress, StatusBadge, formatBytes } from '../shared/components';
import { usePolling } from '../shared/hooks';
import { workflowUrl, type CloudSyncView, type UiConfig } from './types';

const STEPS: Record<string, string> = {
  inventory: 'Taking the robots’ first inventory',
  exchange: 'Exchanging data with the cloud',
  apply: 'Updating the local database',
  images: 'Downloading static images',
  plan: 'Finding missing robot files',
  download: 'Downloading robot files',
  cursor: 'Recording the sync',
  done: 'Done',
};

async function latest(api: ApiClient): Promise<CloudSyncView | null> {
  try {
    return await api.get<CloudSyncView>('/sync');
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) return null; // no sync has run yet
    throw e;
  }
}

export function CloudSyncPanel({ api, config }: { api: ApiClient; config: UiConfig }) {
  const run = usePolling(() => latest(api), 1000);
  const v = run.data;
  const p = v?.progress;
  const r = v?.result;

  return (
    <>
      <h2>Cloud sync</h2>
      {run.error ? <Notice tone="error">Could not load the sync status: {run.error}</Notice> : null}
      {run.data === null && !run.error ? <p className="muted">No sync has run yet. Press Synchronize.</p> : null}
      {v ? (
        <section className="panel" aria-label="Latest cloud sync" data-status={v.status} data-outcome={r?.outcome ?? ''}>
          <div className="row">
            <StatusBadge status={v.status} />
            {p ? <span>{STEPS[p.step] ?? p.step}</span> : null}
            <a href={workflowUrl(config, v.workflow_id)} target="_blank" rel="noreferrer">
              This run in Temporal Web
            </a>
          </div>
          {p && (v.status === 'RUNNING' || p.rfs.missing > 0) ? (
            <>
              <Progress label="Robot files" value={p.rfs.downloaded} max={p.rfs.missing} text={`${p.rfs.downloaded} / ${p.rfs.missing} files`} />
              <Progress label="Bytes" value={p.rfs.bytes} max={p.rfs.bytesTotal} text={`${formatBytes(p.rfs.bytes)} / ${formatBytes(p.rfs.bytesTotal)}`} />
            </>
          ) : null}
          {r?.outcome === 'outdated_app' ? (
            <Notice tone="warning">
              This app is outdated: please update it, then synchronize again. Nothing was applied locally; your data was sent to the cloud
              and kept. {r.message ?? ''}
            </Notice>
          ) : null}
          {r?.outcome === 'auth_failed' ? (
            <Notice tone="error">The cloud refused this center’s credentials: {r.message ?? 'authentication failed'}. Ask your administrator for a new center token.</Notice>
          ) : null}
          {v.error ? <Notice tone="error">The sync failed: {v.error}</Notice> : null}
          {r?.outcome === 'synced' ? (
            <>
              <Notice tone="success">Synchronized.</Notice>
              <ul aria-label="Cloud sync result">
                {r.exchange ? (
                  <li>
                    Sent {r.exchange.sent.sessions} sessions and {r.exchange.sent.children} children; received {r.exchange.downstream.actions} actions,{' '}
                    {r.exchange.downstream.categories} categories, {r.exchange.downstream.skills} skills.
                  </li>
                ) : null}
                {r.images ? (
                  <li>
                    Static images: {r.images.downloaded} downloaded ({formatBytes(r.images.bytes)}), {r.images.failed.length} failed.
                  </li>
                ) : null}
                {r.rfs ? (
                  <li>
                    Robot files: {r.rfs.downloaded} downloaded ({formatBytes(r.rfs.fetched)} fetched), {r.rfs.satisfied} already in place,{' '}
                    {r.rfs.failed.length} failed.
                  </li>
                ) : null}
              </ul>
              {r.rfs && r.rfs.failed.length > 0 ? (
                <Notice tone="error">
                  Files that failed:{' '}
                  {r.rfs.failed.map((f) => (
                    <span key={f.sha256} className="mono">
                      {f.sha256.slice(0, 12)}… ({f.error}){' '}
                    </span>
                  ))}
                </Notice>
              ) : null}
            </>
          ) : null}
        </section>
      ) : null}
    </>
  );
}
