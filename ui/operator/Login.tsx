// Sign-in: the operator pastes an API bearer token (`npm run token` locally, the identity provider in production).
// It is checked against the API before it is kept, in this tab's session storage only.
import { useState, type FormEvent } from 'react';
import { createApiClient } from '../shared/api';
import { Field, Notice } from '../shared/components';
import { useAction } from '../shared/hooks';

export function Login({ apiBase, expired, onSignedIn }: { apiBase: string; expired: boolean; onSignedIn: (token: string) => void }) {
  const [token, setToken] = useState('');
  const { pending, message, run } = useAction();
  const busy = pending !== null;

  const submit = (e: FormEvent) => {
    e.preventDefault();
    const candidate = token.trim();
    return run(
      true,
      async () => {
        const probe = createApiClient(apiBase, () => candidate, () => undefined);
        await probe.get('/jobs?limit=1');
        onSignedIn(candidate);
      },
      'Sign-in refused',
    );
  };

  return (
    <main className="login">
      <section className="panel">
        <h2>Fleetsync OTA operator</h2>
        {expired ? <Notice tone="warning">Your token was refused (expired or revoked). Sign in again.</Notice> : null}
        <form onSubmit={(e) => void submit(e)}>
          <Field label="API token" hint="A bearer token for this API. Locally: npm run token">
            <input name="token" type="password" autoComplete="off" value={token} onChange={(e) => setToken(e.target.value)} required />
          </Field>
          <div className="row" style={{ marginTop: 12 }}>
            <button type="submit" disabled={busy || !token.trim()}>
              {busy ? 'Checking…' : 'Sign in'}
            </button>
          </div>
        </form>
        {message ? <Notice tone={message.tone}>{message.text}</Notice> : null}
      </section>
    </main>
  );
}
