// The operator's page: sign in with an API token, then upload files, deploy them, and watch jobs live.
import { useEffect, useMemo, useState } from 'react';
import { createApiClient, type ApiClient } from '../shared/api';
import { Notice } from '../shared/components';
import { DeployStateView } from './DeployStateView';
import { FilesView } from './FilesView';
import { JobsView } from './JobsView';
import { Login } from './Login';
import { RobotsView } from './RobotsView';
import { RolloutsView } from './RolloutsView';
import type { UiConfig } from './types';

const TOKEN_KEY = 'fleetsync.operator.token';
const VIEWS = { jobs: 'Jobs', files: 'Files & deploy', rollouts: 'Rollouts', robots: 'Robot files', registry: 'Robot registry' } as const;
type View = keyof typeof VIEWS;

export interface ViewProps {
  api: ApiClient;
  config: UiConfig;
  go: (view: View, filter?: Record<string, string>) => void;
  filter: Record<string, string>;
}

export function App() {
  const [token, setToken] = useState<string | null>(() => sessionStorage.getItem(TOKEN_KEY));
  const [config, setConfig] = useState<UiConfig | null>(null);
  const [configError, setConfigError] = useState<string | null>(null);
  const [view, setView] = useState<View>('jobs');
  const [filter, setFilter] = useState<Record<string, string>>({});
  const [expired, setExpired] = useState(false);

  useEffect(() => {
    fetch('config.json')
      .then((r) => (r.ok ? (r.json() as Promise<UiConfig>) : Promise.reject(new Error(`config.json: HTTP ${r.status}`))))
      .then(setConfig, (e: unknown) => setConfigError(String(e)));
  }, []);

  const signOut = (why?: 'expired') => {
    sessionStorage.removeItem(TOKEN_KEY);
    setToken(null);
    setExpired(why === 'expired');
  };
  const api = useMemo(
    () => (config ? createApiClient(config.apiBase, () => sessionStorage.getItem(TOKEN_KEY), () => signOut('expired')) : null),
    [config],
  );

  if (configError) return <Notice tone="error">The page could not load its configuration: {configError}</Notice>;
  if (!config || !api) return <p className="muted">Loading…</p>;
  if (!token)
    return (
      <Login
        apiBase={config.apiBase}
        expired={expired}
        onSignedIn={(t) => {
          sessionStorage.setItem(TOKEN_KEY, t);
          setToken(t);
          setExpired(false);
        }}
      />
    );

  const go = (v: View, f: Record<string, string> = {}) => {
    setView(v);
    setFilter(f);
  };
  const props: ViewProps = { api, config, go, filter };
  return (
    <div className="layout">
      <aside className="sidebar">
        <h1>Fleetsync OTA</h1>
        <nav aria-label="Sections">
          {(Object.keys(VIEWS) as View[]).map((v) => (
            <button key={v} type="button" className="navbtn" aria-current={view === v ? 'page' : undefined} onClick={() => go(v)}>
              {VIEWS[v]}
            </button>
          ))}
          <a href={`${config.temporalWebUrl}/namespaces/${config.temporalNamespace}/workflows`} target="_blank" rel="noreferrer">
            Temporal Web ↗
          </a>
          <a href={`${config.apiBase}/docs`} target="_blank" rel="noreferrer">
            API docs ↗
          </a>
        </nav>
        <div className="spacer" />
        <button type="button" className="navbtn" onClick={() => signOut()}>
          Sign out
        </button>
      </aside>
      <main>
        {view === 'jobs' && <JobsView {...props} />}
        {view === 'files' && <FilesView {...props} />}
        {view === 'robots' && <DeployStateView {...props} />}
        {view === 'registry' && <RobotsView {...props} />}
        {view === 'rollouts' && <RolloutsView {...props} />}
      </main>
    </div>
  );
}
