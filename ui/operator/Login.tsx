// Sign-in: the operator pastes an API bearer token (`npm run token` locally, the identity provider in production).
// It is checked against the API before it is kept, in this tab's session storage only.
import { useState, type FormEvent } from 'react';
import { ApiError, createApiClient } from '../shared/api';
import { Field, Notice } from '../shared/components';

export function Login({ apiBase, expired, onSignedIn }: { apiBase: string; expired: boolean; onSignedIn: (token: string) => void }) {
  const [token, setToken] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    const candidate = token.trim();
    try {
      const probe = createApiClient(apiBase, () => candidate, () => undefined);
      await probe.get('/jobs?limit=1');
      onSignedIn(candidate);
    } catch (err) {
      setError(err instanceof ApiError ? `Sign-in refused: ${err.message}` : String(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <main className="login">
      <section className="panel">
        <h2>Fleetsync OTA operator</h2>
        {expired ? <Notice tone="warning">Your token was refused (expired or revoked). Sign in again.</Notice> : null}
        <form onSubmit={submit}>
          <Field label="API token" hint="A bearer token for this API. Locally: npm run token">
            <input name="token" type="password" autoComplete="off" value={token} onChange={(e) => setToken(e.target.value)} required />
          </Field>
          <div className="row" style={{ marginTop: 12 }}>
            <button type="submit" disabled={busy || !token.trim()}>
              {busy ? 'Checking…' : 'Sign in'}
            </button>
          </div>
        </form>
        {error ? <Notice tone="error">{error}</Notice> : null}
      </section>
    </main>
  );
}
