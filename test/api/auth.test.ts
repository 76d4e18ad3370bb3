// Bearer-JWT checks of the API's auth middleware, over real HTTP on an ephemeral port (no stack needed).
import express from 'express';
import type http from 'node:http';
import { generateKeyPair, SignJWT, type JWTPayload } from 'jose';
import { authContext, bearerAuth, robotScopeProblem, signToken, type AuthContext, type JwtSettings } from '../../api/auth';
import { closeServer, listen, serverPort } from '../../api/server';

const settings: JwtSettings = { secret: 'unit-test-secret-0123456789abcdef', issuer: 'fleetsync', audience: 'fleetsync-api' };
const key = new TextEncoder().encode(settings.secret);
let server: http.Server;
let base: string;

beforeAll(async () => {
  const app = express();
  app.use(bearerAuth(settings));
  app.get('/who', (_req, res) => {
    res.json({ subject: authContext(res)?.subject ?? null });
  });
  server = await listen(app, 0, '127.0.0.1');
  base = `http://127.0.0.1:${serverPort(server)}`;
});

afterAll(async () => {
  await closeServer(server, 1000);
});

async function call(authorization?: string): Promise<{ status: number; body: { detail?: string; subject?: string | null }; www: string | null }> {
  const res = await fetch(`${base}/who`, { headers: authorization ? { authorization } : {} });
  return { status: res.status, body: (await res.json()) as { detail?: string }, www: res.headers.get('www-authenticate') };
}

const claims = (over: JWTPayload = {}): JWTPayload => ({ iss: settings.issuer, aud: settings.audience, sub: 'tester', ...over });
const hs = (alg: string, payload: JWTPayload, exp: string | number | null = '5m') => {
  const jwt = new SignJWT(payload).setProtectedHeader({ alg }).setIssuedAt();
  if (exp !== null) jwt.setExpirationTime(exp);
  return jwt.sign(key);
};

it('accepts a token from signToken (the `npm run token` path) and exposes its subject', async () => {
  const token = await signToken(settings, { subject: 'alice', ttl: '1h' });
  const r = await call(`Bearer ${token}`);
  expect(r.status).toBe(200);
  expect(r.body).toEqual({ subject: 'alice' });
});

it('accepts a lower-case scheme', async () => {
  expect((await call(`bearer ${await hs('HS256', claims())}`)).status).toBe(200);
});

it('refuses a request without a token: 401, JSON detail, WWW-Authenticate', async () => {
  const r = await call();
  expect(r).toEqual({ status: 401, body: { detail: 'Not authenticated' }, www: 'Bearer' });
});

it.each([
  ['Basic dXNlcjpwYXNz', /Invalid authorization header/],
  ['Bearer not.a.jwt', /^Invalid token$/],
  ['Bearer', /Invalid authorization header/],
])('refuses %j', async (header, detail) => {
  const r = await call(header);
  expect(r.status).toBe(401);
  expect(r.body.detail).toMatch(detail);
});

it('refuses a token signed with another secret', async () => {
  const other = await new SignJWT(claims()).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('5m').sign(new TextEncoder().encode('another-secret-0123456789abcdef'));
  const r = await call(`Bearer ${other}`);
  expect(r.status).toBe(401);
  expect(r.body.detail).toBe('Invalid token');
});

it.each(['HS384', 'HS512'])('refuses the right secret with algorithm %s (allow-list is HS256 only)', async (alg) => {
  const r = await call(`Bearer ${await hs(alg, claims())}`);
  expect(r.status).toBe(401);
  expect(r.body.detail).toBe('Invalid token: algorithm not allowed');
});

it('refuses an RS256 token and an unsigned (alg "none") token', async () => {
  const { privateKey } = await generateKeyPair('RS256');
  const rs = await new SignJWT(claims()).setProtectedHeader({ alg: 'RS256' }).setExpirationTime('5m').sign(privateKey);
  expect((await call(`Bearer ${rs}`)).status).toBe(401);
  const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const none = `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ ...claims(), exp: Math.floor(Date.now() / 1000) + 300 })}.`;
  expect((await call(`Bearer ${none}`)).status).toBe(401);
});

it('refuses an expired token with "Token expired"', async () => {
  const r = await call(`Bearer ${await hs('HS256', claims(), Math.floor(Date.now() / 1000) - 60)}`);
  expect(r).toMatchObject({ status: 401, body: { detail: 'Token expired' } });
});

it('refuses a token without exp', async () => {
  const r = await call(`Bearer ${await hs('HS256', claims(), null)}`);
  expect(r).toMatchObject({ status: 401, body: { detail: 'Invalid token: "exp" claim missing' } });
});

it.each([
  ['iss', { iss: 'someone-else' }],
  ['aud', { aud: 'another-api' }],
])('refuses a wrong %s', async (claim, over) => {
  const r = await call(`Bearer ${await hs('HS256', claims(over))}`);
  expect(r.status).toBe(401);
  expect(r.body.detail).toBe(`Invalid token: "${claim}" claim check failed`);
});

describe('robot scope patterns', () => {
  const scoped = (robots: string[] | null): AuthContext => ({ subject: 's', tokenId: 'j', role: 'operator', robots });
  it.each([
    [null, 'anything', true],
    [['clinic-a-*'], 'clinic-a-7', true],
    [['clinic-a-*'], 'clinic-b-7', false],
    [['robot.1'], 'robot.1', true],
    [['robot.1'], 'robotX1', false], // "." is literal, not a regex wildcard
    [['*'], 'robot01', true],
    [[], 'robot01', false],
  ])('%j allows %s: %s', (robots, robotId, allowed) => {
    expect(robotScopeProblem(scoped(robots), robotId) === null).toBe(allowed);
  });
});
