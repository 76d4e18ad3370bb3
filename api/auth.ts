// Bearer-JWT authentication and role-based authorization shared by the cloud API's routers.
// - Authentication (bearerAuth → 401): an algorithm allow-list (HS256 with the shared secret; EdDSA/RS256/ES256
//   with the keys of a JWKS file or URL, for an identity provider). The key is chosen by the token's algorithm, so
//   a token claiming HS256 is only ever checked against the secret: an HS256 token "signed" with a public key (key
//   confusion) fails, as do `none` and algorithms outside the list. `exp`, `iss` and `aud` are mandatory; with a
//   maximum lifetime, `iat` is too and exp - iat may not exceed it. A revoked token id (`jti`) is refused.
// - Authorization (requireRole → 403 naming the role): roles are ordered viewer < operator < admin and carried in
//   the token's `role` claim; an optional `robots` claim (id patterns) limits where the caller may deploy.
// The token itself is never logged (common/logger.ts redacts `authorization`).
import crypto from 'node:crypto';
import fs from 'node:fs';
import type { RequestHandler, Response } from 'express';
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  errors,
  jwtVerify,
  SignJWT,
  type JSONWebKeySet,
  type JWTPayload,
  type JWTVerifyGetKey,
} from 'jose';
import type { Config, JwtAlgorithm } from '../common/config';

export const ROLES = ['viewer', 'operator', 'admin'] as const;
export type Role = (typeof ROLES)[number];

export interface JwtSettings {
  secret: string;
  issuer: string;
  audience: string;
  /** Accepted algorithms; default HS256 only. The asymmetric ones are verified with `jwks`. */
  algorithms?: readonly JwtAlgorithm[];
  /** Public keys of asymmetric tokens (jose's createLocalJWKSet / createRemoteJWKSet). */
  jwks?: JWTVerifyGetKey;
  /** Longest accepted token lifetime (exp - iat, and age since iat), in ms; `iat` becomes mandatory. */
  maxTtlMs?: number;
  /** True when a token id has been revoked (revocations.ts). Throws when it cannot tell: 503, fail closed. */
  isRevoked?: (jti: string) => Promise<boolean>;
}

export const JWT_ALGORITHM = 'HS256';
const CLOCK_TOLERANCE_S = 5;

/** What a route may learn about the caller (`res.locals.auth`). */
export interface AuthContext {
  subject: string | null;
  /** The token's id (`jti`): what revocation and the rate limit key on. */
  tokenId: string | null;
  /** null when the token carries no known role: every role-protected route answers 403. */
  role: Role | null;
  /** Robot id patterns (`*` wildcard) the caller may deploy to; null = no restriction. */
  robots: string[] | null;
}

/** The authenticated caller of this request (set by bearerAuth), or null on unauthenticated routes. */
export function authContext(res: Response): AuthContext | null {
  const a: unknown = res.locals.auth;
  return a && typeof a === 'object' && 'subject' in a ? (a as AuthContext) : null;
}

export const hasRole = (have: Role | null, need: Role): boolean => have !== null && ROLES.indexOf(have) >= ROLES.indexOf(need);

const isRole = (v: unknown): v is Role => typeof v === 'string' && (ROLES as readonly string[]).includes(v);

/** A refusal with its own words (lifetime too long, malformed claim, revoked). */
class TokenRefused extends Error {
  override name = 'TokenRefused';
}

const secretKey = (secret: string): Uint8Array => new TextEncoder().encode(secret);

export async function verifyToken(token: string, s: JwtSettings): Promise<JWTPayload> {
  const hmac = secretKey(s.secret);
  const getKey: JWTVerifyGetKey = async (header, t) => {
    // The algorithm picks the key: only HS256 may use the secret, only JWKS keys may verify the others.
    if (header.alg === JWT_ALGORITHM) return hmac;
    if (!s.jwks) throw new errors.JWKSNoMatchingKey();
    return s.jwks(header, t);
  };
  const maxTtlS = s.maxTtlMs === undefined ? undefined : Math.floor(s.maxTtlMs / 1000);
  const { payload } = await jwtVerify(token, getKey, {
    algorithms: [...(s.algorithms ?? [JWT_ALGORITHM])],
    issuer: s.issuer,
    audience: s.audience,
    requiredClaims: maxTtlS === undefined ? ['exp'] : ['exp', 'iat'],
    // Also refuses an iat in the future.
    ...(maxTtlS === undefined ? {} : { maxTokenAge: maxTtlS }),
    clockTolerance: CLOCK_TOLERANCE_S,
  });
  if (maxTtlS !== undefined && (payload.exp ?? 0) - (payload.iat ?? 0) > maxTtlS) {
    throw new TokenRefused(`Invalid token: lifetime (exp - iat) exceeds the maximum of ${maxTtlS} s`);
  }
  return payload;
}

export interface TokenOptions {
  subject: string;
  /** jose time span ("15m", "12h") or an absolute expiry in epoch seconds. */
  ttl: string | number;
  role?: Role;
  /** Robot id patterns the token may deploy to. */
  robots?: string[];
  /** Default: a random UUID (a token id makes a token revocable). */
  jwtId?: string;
}

/** An HS256 token signed with the shared secret (`npm run token`, tests, benchmarks). */
export async function signToken(s: JwtSettings, opts: TokenOptions): Promise<string> {
  const claims: JWTPayload = {};
  if (opts.role) claims.role = opts.role;
  if (opts.robots) claims.robots = opts.robots;
  return new SignJWT(claims)
    .setProtectedHeader({ alg: JWT_ALGORITHM, typ: 'JWT' })
    .setSubject(opts.subject)
    .setIssuer(s.issuer)
    .setAudience(s.audience)
    .setJti(opts.jwtId ?? crypto.randomUUID())
    .setIssuedAt()
    .setExpirationTime(opts.ttl)
    .sign(secretKey(s.secret));
}

/** HS256 with the shared secret: what `signToken` needs (the CLI, tests and benchmarks mint local tokens). */
export const sharedSecretSettings = (api: Config['api']): JwtSettings => ({ secret: api.jwtSecret, issuer: api.jwtIssuer, audience: api.jwtAudience });

/** The operator-token settings of the cloud API from its configuration (reads a JWKS file once, at start). */
export function operatorJwtSettings(api: Config['api'], isRevoked?: JwtSettings['isRevoked']): JwtSettings {
  let jwks: JWTVerifyGetKey | undefined;
  if (api.jwks) {
    jwks = /^https?:\/\//i.test(api.jwks)
      ? createRemoteJWKSet(new URL(api.jwks), { cacheMaxAge: 10 * 60_000, cooldownDuration: 30_000 })
      : createLocalJWKSet(JSON.parse(fs.readFileSync(api.jwks, 'utf8')) as JSONWebKeySet);
  }
  return {
    ...sharedSecretSettings(api),
    // Without keys the asymmetric algorithms cannot be verified: they are refused as "not allowed".
    algorithms: api.jwtAlgorithms.filter((a) => a === JWT_ALGORITHM || jwks !== undefined),
    jwks,
    maxTtlMs: api.tokenMaxTtlMs,
    isRevoked,
  };
}

/** Why a token was refused, in words that help the caller and reveal nothing about the secret. */
function reason(e: unknown): string {
  if (e instanceof TokenRefused) return e.message;
  if (e instanceof errors.JWTExpired) return 'Token expired';
  if (e instanceof errors.JOSEAlgNotAllowed) return 'Invalid token: algorithm not allowed';
  if (e instanceof errors.JWTClaimValidationFailed) return `Invalid token: "${e.claim}" claim ${e.reason === 'missing' ? 'missing' : 'check failed'}`;
  return 'Invalid token';
}

/** The caller as the token describes it; a malformed `robots` claim makes the token invalid. */
function contextOf(payload: JWTPayload): AuthContext {
  const robots = payload.robots;
  if (robots !== undefined && !(Array.isArray(robots) && robots.every((p) => typeof p === 'string' && p.length > 0))) {
    throw new TokenRefused('Invalid token: "robots" claim must be a list of robot id patterns');
  }
  return {
    subject: typeof payload.sub === 'string' ? payload.sub : null,
    tokenId: typeof payload.jti === 'string' ? payload.jti : null,
    role: isRole(payload.role) ? payload.role : null,
    robots: robots === undefined ? null : (robots as string[]),
  };
}

export function bearerAuth(s: JwtSettings): RequestHandler {
  return async (req, res, next) => {
    const refuse = (detail: string) => {
      res.status(401).set('WWW-Authenticate', 'Bearer').json({ detail });
    };
    const header = req.headers.authorization;
    if (!header) return refuse('Not authenticated');
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (!m) return refuse('Invalid authorization header: expected "Bearer <token>"');
    let auth: AuthContext;
    try {
      auth = contextOf(await verifyToken(m[1], s));
    } catch (e) {
      return refuse(reason(e));
    }
    if (s.isRevoked && auth.tokenId !== null) {
      let revoked: boolean;
      try {
        revoked = await s.isRevoked(auth.tokenId);
      } catch {
        // Fail closed: a token that might be revoked is not let through.
        res.status(503).json({ detail: 'Cannot check token revocation right now; retry shortly.' });
        return;
      }
      if (revoked) return refuse('Token revoked');
    }
    res.locals.auth = auth;
    next();
  };
}

/**
 * 403 unless the caller (bearerAuth ran before) holds `role` or a higher one. Export for every router of the
 * cloud API, e.g. `r.post('/robots', requireRole('admin'), handler)`.
 */
export function requireRole(role: Role): RequestHandler {
  return (_req, res, next) => {
    const auth = authContext(res);
    if (!auth) {
      res.status(401).set('WWW-Authenticate', 'Bearer').json({ detail: 'Not authenticated' });
      return;
    }
    if (!hasRole(auth.role, role)) {
      const has = auth.role ? `the "${auth.role}" role` : 'no role';
      res.status(403).json({ detail: `Forbidden: requires the "${role}" role (the token has ${has})` });
      return;
    }
    next();
  };
}

const patternRegex = (pattern: string): RegExp =>
  new RegExp(`^${pattern.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`);

/** null when the caller may deploy to `robotId`, else a message naming the field (answered 403). */
export function robotScopeProblem(auth: AuthContext | null, robotId: string, field = 'robot_id'): string | null {
  if (!auth?.robots) return null;
  if (auth.robots.some((p) => patternRegex(p).test(robotId))) return null;
  return `${field}: robot ${robotId} is outside this token's robot scope (${auth.robots.join(', ') || 'none'})`;
}
