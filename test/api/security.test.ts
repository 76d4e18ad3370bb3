// Operator security of the cloud API against the real stack (FerretDB, versitygw, Temporal): the role matrix of
// every endpoint, the robot scope, revocation, token lifetime, JWKS keys, the audit trail, the per-token rate
// limit, upload size limits and the cached /health.
import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { exportJWK, exportSPKI, generateKeyPair, SignJWT, type JWK, type JWTPayload } from 'jose';
import type { Role } from '../../api/auth';
import { createOtaApp } from '../../api/ota/app';
import { closeServer, listen, serverPort } from '../../api/server';
import { repoRoot } from '../../common/config';
import { eventually } from '../helpers';
import { recordRobots } from '../../infra/robots';
import { fileInfoList, filePart, form, listKeys, request, startHarness, uniqueName, type Harness, type JsonResponse } from './harness';

/** What one endpoint call needs, prepared fresh for every call (a delete needs its own file, a cancel its own job). */
interface Call {
  method: string;
  path: string;
  body?: FormData | string;
  headers?: Record<string, string>;
}

/**
 * THE ROLE MATRIX: every authenticated endpoint with the least role that may call it (viewer < operator < admin).
 * To add an endpoint, add a row: its name as in the OpenAPI document, the role, and how to build a valid call.
 * The test below calls it with no role and with every role, and checks that the OpenAPI document lists exactly
 * these endpoints with these roles.
 */
const MATRIX: Array<{ endpoint: string; role: Role; call: (h: Harness) => Promise<Call> }> = [
  { endpoint: 'GET /file/list', role: 'viewer', call: async () => ({ method: 'GET', path: '/file/list' }) },
  { endpoint: 'GET /file/download', role: 'viewer', call: async (h) => ({ method: 'GET', path: `/file/download?${objectQuery(await uploaded(h))}` }) },
  { endpoint: 'GET /job_state/{job_id}', role: 'viewer', call: async (h) => ({ method: 'GET', path: `/job_state/${await pendingJob(h)}` }) },
  { endpoint: 'GET /jobs', role: 'viewer', call: async () => ({ method: 'GET', path: '/jobs?limit=5' }) },
  { endpoint: 'GET /deploy_state/{robot_id}', role: 'viewer', call: async () => ({ method: 'GET', path: '/deploy_state/robot01' }) },
  {
    endpoint: 'POST /file/upload',
    role: 'operator',
    call: async () => ({ method: 'POST', path: '/file/upload', body: form([fileInfoList([{ s3_bucket: 'files' }]), filePart('x', uniqueName('m-up'))]) }),
  },
  {
    endpoint: 'POST /file/deploy',
    role: 'operator',
    call: async () => ({
      method: 'POST',
      path: '/file/deploy',
      body: form([fileInfoList([{ robot_id: 'robot01', deploy_path: '/tmp/m.txt' }]), filePart('x', uniqueName('m-dep'))]),
    }),
  },
  {
    endpoint: 'POST /file/deploy_from_s3',
    role: 'operator',
    call: async (h) => ({ method: 'POST', path: `/file/deploy_from_s3?robot_id=robot01&deploy_path=%2Ftmp%2Fm&${objectQuery(await uploaded(h))}` }),
  },
  {
    endpoint: 'PATCH /file/update',
    role: 'operator',
    call: async (h) => ({
      method: 'PATCH',
      path: '/file/update',
      body: form([{ name: 'file_info', value: JSON.stringify({ s3_bucket: 'files', s3_object_name: await uploaded(h), robot_id: 'robot02' }) }]),
    }),
  },
  { endpoint: 'PUT /file/validate', role: 'operator', call: async (h) => ({ method: 'PUT', path: `/file/validate?${objectQuery(await uploaded(h))}` }) },
  { endpoint: 'PUT /file/invalidate', role: 'operator', call: async (h) => ({ method: 'PUT', path: `/file/invalidate?${objectQuery(await uploaded(h))}` }) },
  { endpoint: 'POST /job/{job_id}/cancel', role: 'operator', call: async (h) => ({ method: 'POST', path: `/job/${await pendingJob(h)}/cancel` }) },
  { endpoint: 'DELETE /file/delete', role: 'admin', call: async (h) => ({ method: 'DELETE', path: `/file/delete?${objectQuery(await uploaded(h))}` }) },
  {
    endpoint: 'POST /tokens/revoke',
    role: 'admin',
    call: async () => ({ method: 'POST', path: '/tokens/revoke', body: JSON.stringify({ jti: crypto.randomUUID() }), headers: { 'content-type': 'application/json' } }),
  },
  { endpoint: 'GET /audit', role: 'admin', call: async () => ({ method: 'GET', path: '/audit?limit=5' }) },
  { endpoint: 'POST /rollouts', role: 'operator', call: async (h) => rolloutCall(await uploaded(h)) },
  { endpoint: 'GET /rollouts', role: 'viewer', call: async () => ({ method: 'GET', path: '/rollouts?limit=5' }) },
  { endpoint: 'GET /rollouts/{rollout_id}', role: 'viewer', call: async (h) => ({ method: 'GET', path: `/rollouts/${await rollout(h)}` }) },
  { endpoint: 'POST /rollouts/{rollout_id}/pause', role: 'operator', call: async (h) => ({ method: 'POST', path: `/rollouts/${await rollout(h)}/pause` }) },
  { endpoint: 'POST /rollouts/{rollout_id}/resume', role: 'operator', call: async (h) => ({ method: 'POST', path: `/rollouts/${await rollout(h)}/resume` }) },
  { endpoint: 'POST /rollouts/{rollout_id}/cancel', role: 'operator', call: async (h) => ({ method: 'POST', path: `/rollouts/${await rollout(h)}/cancel` }) },
  { endpoint: 'GET /robots', role: 'admin', call: async () => ({ method: 'GET', path: '/robots' }) },
  {
    endpoint: 'POST /robots',
    role: 'admin',
    call: async () => ({
      method: 'POST',
      path: '/robots',
      body: JSON.stringify({ robot_id: uniqueName('m-robot'), deploy_roots: ['/tmp/m-robot'] }),
      headers: { 'content-type': 'application/json' },
    }),
  },
  { endpoint: 'DELETE /robots/{robot_id}', role: 'admin', call: async (h) => ({ method: 'DELETE', path: `/robots/${await provisioned(h)}` }) },
];
const RANK: Record<Role, number> = { viewer: 1, operator: 2, admin: 3 };
const CALLERS: Array<Role | null> = [null, 'viewer', 'operator', 'admin'];

const objectQuery = (key: string) => `s3_bucket=files&s3_object_name=${encodeURIComponent(key)}`;

/** A stored file (uploaded with the harness's admin token), for calls that need one. */
async function uploaded(h: Harness, content: string | Buffer = 'content'): Promise<string> {
  const r = await request<Array<{ s3_object_name: string }>>(h, 'POST', '/file/upload', {
    body: form([fileInfoList([{ s3_bucket: 'files' }]), filePart(content, uniqueName('sec'))]),
  });
  expect(r.status).toBe(200);
  return r.body[0].s3_object_name;
}

/** A rollout of `object` to robot01 (its workflow starts on the harness's task queue, which no worker polls). */
const rolloutCall = (object: string): Call => ({
  method: 'POST',
  path: '/rollouts',
  body: JSON.stringify({ s3_object_name: object, deploy_path: '/tmp/m-rollout-{robot_id}.bin', target: { robot_ids: ['robot01'] } }),
  headers: { 'content-type': 'application/json' },
});

async function rollout(h: Harness): Promise<string> {
  const c = rolloutCall(await uploaded(h));
  const r = await request<{ rollout_id: string }>(h, 'POST', c.path, { body: c.body, headers: c.headers });
  expect(r.status).toBe(201);
  return r.body.rollout_id;
}

/** A robot provisioned through the API (harness's admin token), for calls that remove one. */
async function provisioned(h: Harness): Promise<string> {
  const robot_id = uniqueName('m-robot');
  const r = await request(h, 'POST', '/robots', { body: JSON.stringify({ robot_id, deploy_roots: ['/tmp/m-robot'] }), headers: { 'content-type': 'application/json' } });
  expect(r.status).toBe(201);
  return robot_id;
}

/** A PENDING job whose workflow runs (on the harness's task queue, which no worker polls). */
async function pendingJob(h: Harness, robot = 'robot01'): Promise<string> {
  const r = await request<{ job_id: string }>(h, 'POST', `/file/deploy_from_s3?robot_id=${robot}&deploy_path=%2Ftmp%2Fp&${objectQuery(await uploaded(h))}`);
  expect(r.status).toBe(200);
  return r.body.job_id;
}

async function as(h: Harness, token: string, c: Call): Promise<JsonResponse<{ detail?: unknown }>> {
  return request(h, c.method, c.path, { body: c.body, headers: { ...c.headers, authorization: `Bearer ${token}` } });
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

interface AuditView {
  id: string;
  sub: string | null;
  jti: string | null;
  role: string | null;
  method: string;
  route: string;
  params: Record<string, unknown>;
  ip: string;
  status: number;
}

/** Every audit entry, read page by page through the API (admin token). */
async function allAudit(h: Harness, pageSize = 7): Promise<AuditView[]> {
  const out: AuditView[] = [];
  let cursor: string | null = null;
  do {
    const q: string = cursor ? `&cursor=${cursor}` : '';
    const r = await request<{ entries: AuditView[]; next_cursor: string | null }>(h, 'GET', `/audit?limit=${pageSize}${q}`);
    expect(r.status).toBe(200);
    expect(r.body.entries.length).toBeLessThanOrEqual(pageSize);
    out.push(...r.body.entries);
    cursor = r.body.next_cursor;
  } while (cursor);
  return out;
}

describe('roles, scope, revocation and audit', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness({ api: { revocationRefreshMs: 1000 } });
  });
  afterAll(async () => {
    await h?.close();
  });

  it('documents exactly the endpoints of the matrix, each with its role', async () => {
    const doc = await request<{ paths: Record<string, Record<string, { 'x-required-role'?: string; responses: Record<string, unknown> }>> }>(
      h,
      'GET',
      '/openapi.json',
      { auth: false },
    );
    const documented: Record<string, string | undefined> = {};
    for (const [p, ops] of Object.entries(doc.body.paths)) {
      for (const [m, op] of Object.entries(ops)) {
        if (p === '/health') continue;
        documented[`${m.toUpperCase()} ${p}`] = op['x-required-role'];
        expect(Object.keys(op.responses)).toEqual(expect.arrayContaining(['401', '403', '429']));
      }
    }
    expect(documented).toEqual(Object.fromEntries(MATRIX.map((e) => [e.endpoint, e.role])));
  });

  it('gives every endpoint × every role 2xx or 403 naming the role, and audits every mutating call without secrets', async () => {
    const tokens = new Map<Role | null, string>();
    for (const role of CALLERS) tokens.set(role, await h.tokenFor(role));
    const seen: Array<{ endpoint: string; caller: string; status: number; detail?: unknown }> = [];
    const expected: typeof seen = [];
    const mutating: Array<{ jti: string; method: string; route: string; status: number }> = [];
    for (const e of MATRIX) {
      for (const role of CALLERS) {
        const c = await e.call(h);
        const r = await as(h, tokens.get(role)!, c);
        const allowed = role !== null && RANK[role] >= RANK[e.role];
        seen.push({ endpoint: e.endpoint, caller: role ?? 'no role', status: allowed ? Math.floor(r.status / 100) * 100 : r.status, detail: allowed ? undefined : r.body.detail });
        expected.push({
          endpoint: e.endpoint,
          caller: role ?? 'no role',
          status: allowed ? 200 : 403,
          detail: allowed ? undefined : `Forbidden: requires the "${e.role}" role (the token has ${role ? `the "${role}" role` : 'no role'})`,
        });
        if (c.method !== 'GET') {
          const jti = JSON.parse(Buffer.from(tokens.get(role)!.split('.')[1], 'base64url').toString()) as { jti: string };
          const [route] = e.endpoint.split(' ').slice(1);
          mutating.push({ jti: jti.jti, method: c.method, route: `/api/v1${route.replace(/\{(\w+)\}/g, ':$1')}`, status: r.status });
        }
      }
    }
    expect(seen).toEqual(expected);

    // The audit trail: one entry per mutating call (allowed or refused), who/what/where/outcome, no secret.
    const entries = await eventually('every mutating call audited', async () => {
      const all = await allAudit(h);
      return mutating.every((m) => all.some((a) => a.jti === m.jti && a.method === m.method && a.route === m.route && a.status === m.status)) && all;
    });
    for (const m of mutating) {
      const hit = entries.filter((a) => a.jti === m.jti && a.method === m.method && a.route === m.route && a.status === m.status);
      expect(hit.length).toBeGreaterThanOrEqual(1);
      expect(hit[0]).toMatchObject({ sub: expect.stringMatching(/^api-test-/), ip: expect.stringMatching(/127\.0\.0\.1/) });
    }
    const deployEntry = entries.find((a) => a.route === '/api/v1/file/deploy_from_s3' && a.status === 200 && a.role === 'operator');
    expect(deployEntry?.params).toMatchObject({ robot_id: 'robot01', deploy_path: '/tmp/m', s3_bucket: 'files', job_ids: [expect.any(String)] });
    const cancelEntry = entries.find((a) => a.route === '/api/v1/job/:job_id/cancel' && a.status === 202);
    expect(cancelEntry?.params).toEqual({ job_id: expect.any(String) });
    const uploadEntry = entries.find((a) => a.route === '/api/v1/file/upload' && a.status === 200 && a.role === 'operator');
    expect(uploadEntry?.params).toEqual({ objects: [expect.stringMatching(/^m-up-/)] });
    const updateEntry = entries.find((a) => a.route === '/api/v1/file/update' && a.status === 200);
    expect(updateEntry?.params).toEqual({ s3_bucket: 'files', s3_object_name: expect.stringMatching(/^sec-/), content_replaced: false });
    const text = JSON.stringify(entries);
    for (const secret of [...tokens.values(), h.token, h.cfg.api.jwtSecret, h.cfg.s3.secretAccessKey, h.cfg.mqtt.password]) {
      expect(text).not.toContain(secret);
    }
    for (const t of tokens.values()) expect(text).not.toContain(t.split('.')[2]);
    // GETs are not audited.
    expect(entries.some((a) => a.method === 'GET')).toBe(false);
  });

  it('limits an operator with a robot scope to its robots (403 naming robot_id, nothing stored)', async () => {
    const scoped = await h.tokenFor('operator', { robots: ['clinic-a-*', 'robot07'] });
    await recordRobots(h.db.models, [{ id: 'clinic-a-3', roots: ['/tmp'] }]);
    const key = await uploaded(h);
    const ok = await as(h, scoped, { method: 'POST', path: `/file/deploy_from_s3?robot_id=clinic-a-3&deploy_path=%2Ftmp%2Fs&${objectQuery(key)}` });
    expect(ok.status).toBe(200);
    const no = await as(h, scoped, { method: 'POST', path: `/file/deploy_from_s3?robot_id=robot01&deploy_path=%2Ftmp%2Fs&${objectQuery(key)}` });
    expect(no).toMatchObject({ status: 403, body: { detail: "robot_id: robot robot01 is outside this token's robot scope (clinic-a-*, robot07)" } });

    const name = uniqueName('scope');
    const multi = await as(h, scoped, {
      method: 'POST',
      path: '/file/deploy',
      body: form([
        fileInfoList([
          { robot_id: 'robot07', deploy_path: '/tmp/a' },
          { robot_id: 'clinic-b-1', deploy_path: '/tmp/b' },
        ]),
        filePart('a', name),
        filePart('b', name),
      ]),
    });
    expect(multi.status).toBe(403);
    expect(String(multi.body.detail)).toContain('file_info_list.file_list.1.robot_id: robot clinic-b-1 is outside');
    expect(await listKeys(h.s3, 'files', name)).toEqual(new Set());
    expect(await h.db.models.OtaJob.countDocuments({ robot_id: { $in: ['robot07', 'clinic-b-1'] } })).toBe(0);

    const otherJob = await pendingJob(h, 'robot02');
    const cancel = await as(h, scoped, { method: 'POST', path: `/job/${otherJob}/cancel` });
    expect(cancel).toMatchObject({ status: 403, body: { detail: expect.stringContaining('job_id: robot robot02 is outside') } });
  });

  it('refuses a revoked token at once on the revoking API, and within the refresh interval on another', async () => {
    // A second API process on the same database: its own in-process revocation list.
    const other = await listen(createOtaApp(h.deps), 0, '127.0.0.1');
    const otherBase = `http://127.0.0.1:${serverPort(other)}/api/v1`;
    try {
      const victim = await h.tokenFor('operator');
      const jti = (JSON.parse(Buffer.from(victim.split('.')[1], 'base64url').toString()) as { jti: string }).jti;
      expect((await fetch(`${otherBase}/jobs`, { headers: bearer(victim) })).status).toBe(200);
      expect((await as(h, victim, { method: 'GET', path: '/jobs' })).status).toBe(200);

      const revoked = await request<{ jti: string; expires_at: string }>(h, 'POST', '/tokens/revoke', {
        body: JSON.stringify({ jti, reason: 'laptop lost' }),
        headers: { 'content-type': 'application/json' },
      });
      expect(revoked.status).toBe(200);
      expect(revoked.body.jti).toBe(jti);
      expect(new Date(revoked.body.expires_at).getTime()).toBeGreaterThan(Date.now() + 23 * 3600_000); // default 24 h max lifetime

      expect(await as(h, victim, { method: 'GET', path: '/jobs' })).toMatchObject({ status: 401, body: { detail: 'Token revoked' } });
      const t0 = Date.now();
      await eventually('the other API refuses the revoked token', async () => (await fetch(`${otherBase}/jobs`, { headers: bearer(victim) })).status === 401, 5000);
      expect(Date.now() - t0).toBeLessThan(3000); // refresh interval 1 s here (API_REVOCATION_REFRESH, default 5 s)
      // Other tokens are unaffected.
      expect((await fetch(`${otherBase}/jobs`, { headers: bearer(await h.tokenFor('viewer')) })).status).toBe(200);
      const body = (await (await fetch(`${otherBase}/jobs`, { headers: bearer(victim) })).json()) as { detail: string };
      expect(body.detail).toBe('Token revoked');
    } finally {
      await closeServer(other, 1000);
    }
  });

  it('validates the revoke body (422 naming the field) and keeps the audit page cursor honest (400)', async () => {
    const r = await request(h, 'POST', '/tokens/revoke', { body: JSON.stringify({ jti: '' }), headers: { 'content-type': 'application/json' } });
    expect(r).toMatchObject({ status: 422, body: { detail: expect.stringContaining('jti') } });
    expect(await request(h, 'GET', '/audit?cursor=bogus')).toMatchObject({ status: 400, body: { detail: expect.stringContaining('cursor') } });
  });
});

describe('token lifetime', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness({ api: { tokenMaxTtlMs: 3600_000 } });
  });
  afterAll(async () => {
    await h?.close();
  });

  const sign = (claims: JWTPayload, iat: number | null, exp: number) => {
    const jwt = new SignJWT({ role: 'admin', jti: crypto.randomUUID(), ...claims })
      .setProtectedHeader({ alg: 'HS256' })
      .setIssuer(h.cfg.api.jwtIssuer)
      .setAudience(h.cfg.api.jwtAudience)
      .setSubject('lifetime')
      .setExpirationTime(exp);
    if (iat !== null) jwt.setIssuedAt(iat);
    return jwt.sign(new TextEncoder().encode(h.cfg.api.jwtSecret));
  };
  const now = () => Math.floor(Date.now() / 1000);

  it.each([
    ['expired', () => sign({}, now() - 600, now() - 60), 'Token expired'],
    ['longer-lived than the maximum (2 h > 1 h)', () => sign({}, now(), now() + 7200), 'Invalid token: lifetime (exp - iat) exceeds the maximum of 3600 s'],
    ['without iat', () => sign({}, null, now() + 600), 'Invalid token: "iat" claim missing'],
    ['issued in the future', () => sign({}, now() + 600, now() + 1200), 'Invalid token: "iat" claim check failed'],
  ])('refuses a token %s with 401', async (_what, mint, detail) => {
    const r = await request(h, 'GET', '/jobs', { auth: false, headers: bearer(await mint()) });
    expect(r).toMatchObject({ status: 401, body: { detail } });
  });

  it('accepts a token exactly at the maximum lifetime', async () => {
    expect((await request(h, 'GET', '/jobs', { auth: false, headers: bearer(await sign({}, now(), now() + 3600)) })).status).toBe(200);
  });
});

describe('npm run token', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness();
  });
  afterAll(async () => {
    await h?.close();
  });
  const run = (...args: string[]) => promisify(execFile)(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'api/token.ts'), ...args], { cwd: repoRoot });

  it('mints a token with the role asked for, and prints its id on stderr', async () => {
    const { stdout, stderr } = await run('--role', 'viewer', '--ttl', '1h', '--sub', 'cli-user');
    const token = stdout.trim();
    expect(stderr).toMatch(/^role=viewer jti=[0-9a-f-]{36} expires=\S+Z$/m);
    expect((await request(h, 'GET', '/jobs', { auth: false, headers: bearer(token) })).status).toBe(200);
    const up = await request(h, 'POST', '/file/upload', { auth: false, headers: bearer(token), body: form([fileInfoList([{}]), filePart('x')]) });
    expect(up).toMatchObject({ status: 403, body: { detail: 'Forbidden: requires the "operator" role (the token has the "viewer" role)' } });
  });

  it('refuses a --ttl beyond the configured maximum lifetime', async () => {
    await expect(run('--role', 'admin', '--ttl', '25h')).rejects.toMatchObject({ code: 1, stderr: expect.stringContaining('API_TOKEN_MAX_TTL') });
  });
});

describe('asymmetric keys (JWKS)', () => {
  let dir: string;
  let jwksServer: http.Server;
  let ed: Awaited<ReturnType<typeof generateKeyPair>>;
  let rsa: Awaited<ReturnType<typeof generateKeyPair>>;
  const fileApis: Harness[] = [];
  let urlApi: Harness;

  const claims = (h: Harness, role: Role = 'viewer') =>
    new SignJWT({ role, jti: crypto.randomUUID() }).setIssuer(h.cfg.api.jwtIssuer).setAudience(h.cfg.api.jwtAudience).setSubject('idp-user').setIssuedAt().setExpirationTime('10m');

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'jwks-'));
    ed = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
    rsa = await generateKeyPair('RS256', { extractable: true });
    const jwk = async (k: typeof ed.publicKey, kid: string, alg: string): Promise<JWK> => ({ ...(await exportJWK(k)), kid, alg, use: 'sig' });
    const file = path.join(dir, 'jwks.json');
    fs.writeFileSync(file, JSON.stringify({ keys: [await jwk(ed.publicKey, 'ed-1', 'EdDSA')] }));
    const rsaSet = JSON.stringify({ keys: [await jwk(rsa.publicKey, 'rsa-1', 'RS256')] });
    jwksServer = await listen((_req, res) => {
      res.setHeader('content-type', 'application/json');
      res.end(rsaSet);
    }, 0, '127.0.0.1');
    fileApis.push(await startHarness({ api: { jwks: file } }));
    fileApis.push(await startHarness({ api: { jwks: file, jwtAlgorithms: ['EdDSA', 'RS256'] } }));
    urlApi = await startHarness({ api: { jwks: `http://127.0.0.1:${serverPort(jwksServer)}/.well-known/jwks.json` } });
  });
  afterAll(async () => {
    await Promise.all([...fileApis, urlApi].map((h) => h?.close()));
    await closeServer(jwksServer, 1000);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('accepts an EdDSA token whose key is in the JWKS file, with its role', async () => {
    const [h] = fileApis;
    const token = await claims(h).setProtectedHeader({ alg: 'EdDSA', kid: 'ed-1' }).sign(ed.privateKey);
    expect((await request(h, 'GET', '/jobs', { auth: false, headers: bearer(token) })).status).toBe(200);
    // Role still applies: a viewer from the identity provider cannot upload.
    const up = await request(h, 'POST', '/file/upload', { auth: false, headers: bearer(token), body: form([fileInfoList([{}]), filePart('x')]) });
    expect(up).toMatchObject({ status: 403, body: { detail: expect.stringContaining('"operator" role') } });
  });

  it('accepts an RS256 token whose key is served at the JWKS URL', async () => {
    const token = await claims(urlApi, 'operator').setProtectedHeader({ alg: 'RS256', kid: 'rsa-1' }).sign(rsa.privateKey);
    expect((await request(urlApi, 'GET', '/jobs', { auth: false, headers: bearer(token) })).status).toBe(200);
  });

  it('refuses an EdDSA token signed by a key that is not in the JWKS', async () => {
    const [h] = fileApis;
    const stranger = await generateKeyPair('EdDSA', { crv: 'Ed25519' });
    const token = await claims(h).setProtectedHeader({ alg: 'EdDSA', kid: 'ed-1' }).sign(stranger.privateKey);
    expect((await request(h, 'GET', '/jobs', { auth: false, headers: bearer(token) })).status).toBe(401);
  });

  it('refuses an HS256 token forged with the public key (key confusion), in every encoding of that key', async () => {
    const pem = await exportSPKI(ed.publicKey);
    const jwkJson = JSON.stringify(await exportJWK(ed.publicKey));
    const raw = Buffer.from((await exportJWK(ed.publicKey)).x!, 'base64url');
    for (const h of fileApis) {
      for (const secret of [new TextEncoder().encode(pem), new TextEncoder().encode(jwkJson), new Uint8Array(raw)]) {
        const forged = await claims(h, 'admin').setProtectedHeader({ alg: 'HS256', kid: 'ed-1' }).sign(secret);
        const r = await request(h, 'GET', '/jobs', { auth: false, headers: bearer(forged) });
        expect(r.status).toBe(401);
      }
    }
    // With HS256 off the allow-list even the shared secret's own tokens are refused as "algorithm not allowed".
    const r = await request(fileApis[1], 'GET', '/jobs', { auth: false, headers: bearer(fileApis[1].token) });
    expect(r).toMatchObject({ status: 401, body: { detail: 'Invalid token: algorithm not allowed' } });
  });
});

describe('abuse limits', () => {
  let h: Harness;
  const MAX_FILE = 4096;
  const MAX_REQUEST = 16 * 1024;
  beforeAll(async () => {
    h = await startHarness({
      api: { rateLimit: 5, rateLimitWindowMs: 60_000, uploadMaxFileBytes: MAX_FILE, uploadMaxRequestBytes: MAX_REQUEST },
      options: { healthCacheMs: 1500 },
    });
  });
  afterAll(async () => {
    await h?.close();
  });

  it('answers 429 with Retry-After past the per-token rate limit, and counts each token on its own', async () => {
    const t = await h.tokenFor('viewer');
    const statuses: number[] = [];
    let last: JsonResponse<{ detail?: unknown }> | undefined;
    for (let i = 0; i < 7; i++) {
      last = await request(h, 'GET', '/jobs', { auth: false, headers: bearer(t) });
      statuses.push(last.status);
    }
    expect(statuses).toEqual([200, 200, 200, 200, 200, 429, 429]);
    expect(Number(last!.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(last!.body.detail).toMatch(/^Rate limit exceeded: at most 5 requests per 60 s per token/);
    expect((await request(h, 'GET', '/jobs', { auth: false, headers: bearer(await h.tokenFor('viewer')) })).status).toBe(200);
  });

  /** No object with this name prefix in S3 and no row for it. */
  async function expectNothingStored(name: string): Promise<void> {
    expect(await listKeys(h.s3, 'files', name)).toEqual(new Set());
    expect(await h.db.models.OtaFile.countDocuments({ file_name: name })).toBe(0);
    expect(await h.db.models.OtaJob.countDocuments({ file_name: name })).toBe(0);
  }

  it('answers 413 for a file over the per-file limit, and stores nothing (upload and deploy)', async () => {
    const t = await h.tokenFor('operator');
    const name = uniqueName('big');
    const up = await request(h, 'POST', '/file/upload', {
      auth: false,
      headers: bearer(t),
      body: form([fileInfoList([{}, {}]), filePart('small', name), filePart(crypto.randomBytes(MAX_FILE + 1), name)]),
    });
    expect(up).toMatchObject({ status: 413, body: { detail: `files.1: larger than the limit of ${MAX_FILE} bytes per file` } });
    await expectNothingStored(name);

    const dep = await request(h, 'POST', '/file/deploy', {
      auth: false,
      headers: bearer(t),
      body: form([fileInfoList([{ robot_id: 'robot01', deploy_path: '/tmp/big' }]), filePart(crypto.randomBytes(MAX_FILE * 2), name)]),
    });
    expect(dep.status).toBe(413);
    await expectNothingStored(name);
  });

  it('answers 413 for a request over the total limit, declared or streamed without a length, and stores nothing', async () => {
    const t = await h.tokenFor('operator');
    const name = uniqueName('many');
    const items = Array.from({ length: 5 }, () => ({}));
    const parts = () => form([fileInfoList(items), ...items.map(() => filePart(crypto.randomBytes(MAX_FILE - 100), name))]);
    const declared = await request(h, 'POST', '/file/upload', { auth: false, headers: bearer(t), body: parts() });
    expect(declared).toMatchObject({ status: 413, body: { detail: `request body: larger than the limit of ${MAX_REQUEST} bytes` } });
    await expectNothingStored(name);

    // Chunked: no Content-Length, so the limit is enforced on the bytes as they arrive.
    const encoded = new Response(parts());
    const res = await fetch(`${h.base}/file/upload`, {
      method: 'POST',
      headers: { ...bearer(t), 'content-type': encoded.headers.get('content-type')! },
      body: encoded.body,
      duplex: 'half',
    } as RequestInit & { duplex: 'half' });
    expect(res.status).toBe(413);
    expect(((await res.json()) as { detail: string }).detail).toBe(`request body: larger than the limit of ${MAX_REQUEST} bytes`);
    await expectNothingStored(name);
  });

  it('answers 413 for an oversize PATCH /file/update and keeps the previous content', async () => {
    const key = await uploaded(h, 'original');
    const r = await request(h, 'PATCH', '/file/update', {
      auth: false,
      headers: bearer(await h.tokenFor('operator')),
      body: form([{ name: 'file_info', value: JSON.stringify({ s3_bucket: 'files', s3_object_name: key }) }, { name: 'file', value: crypto.randomBytes(MAX_FILE + 10), filename: 'x.bin' }]),
    });
    expect(r.status).toBe(413);
    const dl = await request(h, 'GET', `/file/download?${objectQuery(key)}`, { auth: false, headers: bearer(await h.tokenFor('viewer')) });
    expect(dl).toMatchObject({ status: 200, body: 'original' });
  });

  it('answers /health from a short cache: one dependency check for a burst of requests', async () => {
    let heads = 0;
    h.s3.middlewareStack.add(
      (next, context) => async (args) => {
        if (context.commandName === 'HeadBucketCommand') heads++;
        return next(args);
      },
      { step: 'initialize', name: 'countHeadBucket' },
    );
    await new Promise((r) => setTimeout(r, 1600)); // past any earlier cached answer
    const burst = await Promise.all(Array.from({ length: 20 }, () => request(h, 'GET', '/health', { auth: false })));
    expect(burst.map((r) => r.status)).toEqual(Array(20).fill(200));
    expect(heads).toBe(1);
    await new Promise((r) => setTimeout(r, 1600));
    expect((await request(h, 'GET', '/health', { auth: false })).status).toBe(200);
    expect(heads).toBe(2);
  });
});
