// The specialist's page on the center's computer: the robots of the center, and the seed's two sidebar buttons,
// "Synchronize" (cloud sync) and "Update Robots" (robot sync), each followed live until its result.
import { useEffect, useMemo, useState } from 'react';
import { ApiError, createApiClient } from '../shared/api';
import { Notice } from '../shared/components';
import { useAction } from '../shared/hooks';
import { CloudSyncPanel } from './CloudSyncPanel';
import { RobotSyncPanel } from './RobotSyncPanel';
import { RobotsPanel } from './RobotsPanel';
import type { UiConfig } from './types';

const VIEWS = { robots: 'Robots', cloud: 'Cloud sync', robotSync: 'Robot sync' } as const;
type View = keyof typeof VIEWS;

export function App() {
  const [config, setConfig] = useState<UiConfig | null>(null);
  const [configError, setConfigError] = useState<string | null>(null);
  const [view, setView] = useState<View>('robots');
  const { pending: busy, message: notice, run } = useAction<'cloud' | 'robotSync'>();

  useEffect(() => {
    fetch('config.json')
      .then((r) => (r.ok ? (r.json() as Promise<UiConfig>) : Promise.reject(new Error(`config.json: HTTP ${r.status}`))))
      .then(setConfig, (e: unknown) => setConfigError(String(e)));
  }, []);
  // The offline app runs on the center's own computer, on loopback or the center's LAN: no sign-in.
  const api = useMemo(() => (config ? createApiClient(config.apiBase, () => null, () => undefined) : null), [config]);

  if (configError) return <Notice tone="error">The page could not load its configuration: {configError}</Notice>;
  if (!config || !api) return <p className="muted">Loading…</p>;

  const start = async (which: 'cloud' | 'robotSync') => {
    await run(
      which,
      async () => {
        try {
          await api.post(which === 'cloud' ? '/sync' : '/robots/sync', {});
        } catch (e) {
          // A run already in progress is joined: its progress shows below.
          if (!(e instanceof ApiError && e.status === 409)) throw e;
        }
      },
      'Could not start',
    );
    setView(which);
  };

  return (
    <div className="layout">
      <aside className="sidebar">
        <h1>Center {config.centerId}</h1>
        <div className="actions">
          <button type="button" onClick={() => void start('cloud')} disabled={busy !== null}>
            Synchronize
          </button>
          <button type="button" onClick={() => void start('robotSync')} disabled={busy !== null}>
            Update Robots
          </button>
        </div>
        <nav aria-label="Sections">
          {(Object.keys(VIEWS) as View[]).map((v) => (
            <button key={v} type="button" className="navbtn" aria-current={view === v ? 'page' : undefined} onClick={() => setView(v)}>
              {VIEWS[v]}
            </button>
          ))}
          <a href={`${config.temporalWebUrl}/namespaces/${config.temporalNamespace}/workflows`} target="_blank" rel="noreferrer">
            Temporal Web ↗
          </a>
        </nav>
      </aside>
      <main>
        {notice ? <Notice tone={notice.tone}>{notice.text}</Notice> : null}
        {view === 'robots' && <RobotsPanel api={api} />}
        {view === 'cloud' && <CloudSyncPanel api={api} config={config} />}
        {view === 'robotSync' && <RobotSyncPanel api={api} config={config} />}
      </main>
    </div>
  );
}
