// The cloud's /sync API against the real cloud API process: center JWTs (per-center keys, algorithm allow-list,
// exp/iss/aud), idempotent upserts where the newer updated_at wins, field-named 400s, and RF downloads with
// Range, strong ETag and If-Range.
import { SignJWT, base64url, importJWK } from 'jose';
import { CENTER_JWT_AUDIENCE, newCenterKey } from '../../api/cloud-sync/auth';
import { cfg, testRobots } from '../helpers';
import { createCenter, startCloud, type Center, type CloudSide } from './system';

let cloud: CloudSide;
let center: Center;
beforeAll(async () => {
  cloud = await startCloud();
  center = await createCenter(cloud, { robots: [testRobots()[1]] });
});
afterAll(async () => {
  await center?.close();
  await cloud?.close();
});

const post = (token: string | null, body: unknown) =>
  fetch(`${cloud.baseUrl}/api/v1/sync`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });
const okBody = { app_version: '2.0.0', sessions: [], children: [] };

describe('center JWTs', () => {
  const sign = async (o: { alg?: 'EdDSA' | 'ES256'; exp?: string | number; aud?: string; iss?: string; sub?: string; kid?: string; privateJwk?: object }) =>
    new SignJWT({})
      .setProtectedHeader({ alg: o.alg ?? center.key.alg, kid: o.kid ?? center.id })
      .setSubject(o.sub ?? center.id)
      .setIssuer(o.iss ?? cfg.api.jwtIssuer)
      .setAudience(o.aud ?? CENTER_JWT_AUDIENCE)
      .setIssuedAt()
      .setExpirationTime(o.exp ?? '5m')
      .sign(await importJWK((o.privateJwk ?? center.key.privateJwk) as never, o.alg ?? center.key.alg));

  test('the center token is accepted', async () => {
    const res = await post(center.token, okBody);
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ is_compatible: true });
  });

  test.each([
    ['no token', async () => null, 'Not authenticated'],
    [
      'alg none',
      async () => `${base64url.encode(JSON.stringify({ alg: 'none', kid: center.id }))}.${base64url.encode(JSON.stringify({ sub: center.id, iss: cfg.api.jwtIssuer, aud: CENTER_JWT_AUDIENCE, exp: Math.floor(Date.now() / 1000) + 300 }))}.`,
      'algorithm not allowed',
    ],
    ['expired', async () => sign({ exp: Math.floor(Date.now() / 1000) - 3600 }), 'Token expired'],
    ['wrong key', async () => sign({ privateJwk: (await newCenterKey()).privateJwk }), 'signature verification failed'],
    ['wrong audience', async () => sign({ aud: cfg.api.jwtAudience }), '"aud" claim'],
    ['wrong issuer', async () => sign({ iss: 'someone-else' }), '"iss" claim'],
    ['another center in sub', async () => sign({ sub: 'other-center' }), '"sub" claim'],
    ['unknown center', async () => sign({ kid: 'no-such-center' }), 'unknown center'],
    [
      'HS256 signed with the public key (key confusion)',
      async () =>
        new SignJWT({})
          .setProtectedHeader({ alg: 'HS256', kid: center.id })
          .setSubject(center.id)
          .setIssuer(cfg.api.jwtIssuer)
          .setAudience(CENTER_JWT_AUDIENCE)
          .setExpirationTime('5m')
          .sign(new TextEncoder().encode(JSON.stringify(center.key.publicJwk))),
      'algorithm not allowed',
    ],
  ])('%s gets 401 with the reason', async (_name, token, reason) => {
    const res = await post(await token(), okBody);
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toBe('Bearer');
    expect(((await res.json()) as { detail: string }).detail).toContain(reason);
  });

  test('an OTA operator token is not a center token', async () => {
    const { apiToken } = await import('../ota/system');
    const res = await post(await apiToken(), okBody);
    expect(res.status).toBe(401);
  });

  test('downloads need the center token too', async () => {
    const res = await fetch(`${cloud.baseUrl}/api/v1/sync/rf/config-voice.json`);
    expect(res.status).toBe(401);
  });
});

describe('upstream upserts', () => {
  const rec = (id: string, at: string, data: Record<string, unknown>) => ({ id, updated_at: at, data });

  test('the same records sent twice are stored once; an older copy never overwrites a newer one', async () => {
    const sessions = Array.from({ length: 120 }, (_, i) => rec(`s-${i}`, '2026-11-01T10:00:00.000Z', { n: i }));
    const children = [rec('c-1', '2026-11-01T10:00:00.000Z', { first_name: 'Ana' })];
    const first = (await (await post(center.token, { ...okBody, sessions, children })).json()) as { upstream: Record<string, unknown> };
    expect(first.upstream.sessions).toEqual({ inserted: 120, updated: 0, unchanged: 0 });
    const again = (await (await post(center.token, { ...okBody, sessions, children })).json()) as { upstream: Record<string, unknown> };
    expect(again.upstream.sessions).toEqual({ inserted: 0, updated: 0, unchanged: 120 });
    expect(await cloud.db.cloudSync.sessions.countDocuments({ center_id: center.id })).toBe(120);
    expect(await cloud.db.cloudSync.children.countDocuments({ center_id: center.id })).toBe(1);

    const newer = rec('s-7', '2026-11-02T10:00:00.000Z', { n: 'newer' });
    const older = rec('s-8', '2026-10-01T10:00:00.000Z', { n: 'older' });
    const mixed = (await (await post(center.token, { ...okBody, sessions: [newer, older] })).json()) as { upstream: Record<string, unknown> };
    expect(mixed.upstream.sessions).toEqual({ inserted: 0, updated: 1, unchanged: 1 });
    expect((await cloud.db.cloudSync.sessions.findById(`${center.id}|s-7`).lean())?.data).toEqual({ n: 'newer' });
    expect((await cloud.db.cloudSync.sessions.findById(`${center.id}|s-8`).lean())?.data).toEqual({ n: 8 });
  });

  test('a malformed body gets 400 naming the field', async () => {
    const res = await post(center.token, { app_version: '2.0.0', sessions: [{ id: 'x', updated_at: 'yesterday', data: {} }] });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { detail: string }).detail).toContain('body.sessions.0.updated_at');
  });
});

describe('downloads', () => {
  test('RFs are served with Range, a strong ETag, and If-Range', async () => {
    const rf = (await cloud.db.cloudSync.Rf.findById('gesture-wave.anim').lean())!;
    const url = `${cloud.baseUrl}/api/v1/sync/rf/${rf._id}`;
    const auth = { authorization: `Bearer ${center.token}` };
    const full = await fetch(url, { headers: auth });
    expect(full.status).toBe(200);
    const etag = full.headers.get('etag')!;
    expect(etag).toMatch(/^"[^"]+"$/);
    const body = Buffer.from(await full.arrayBuffer());
    expect(body.length).toBe(rf.size);
    const part = await fetch(url, { headers: { ...auth, range: 'bytes=1000-', 'if-range': etag } });
    expect(part.status).toBe(206);
    expect(part.headers.get('content-range')).toBe(`bytes 1000-${rf.size - 1}/${rf.size}`);
    expect(Buffer.from(await part.arrayBuffer()).equals(body.subarray(1000))).toBe(true);
    // A validator for another version of the object: the whole current object, not a splice.
    const stale = await fetch(url, { headers: { ...auth, range: 'bytes=1000-', 'if-range': '"0123456789abcdef"' } });
    expect(stale.status).toBe(200);
    expect(Number(stale.headers.get('content-length'))).toBe(rf.size);
    await stale.arrayBuffer();
    expect((await fetch(`${cloud.baseUrl}/api/v1/sync/rf/nope.bin`, { headers: auth })).status).toBe(404);
  });
});

