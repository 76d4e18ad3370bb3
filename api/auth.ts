// Bearer-JWT authentication shared by the cloud API's routers. HS256 only: an algorithm allow-list means a
// token signed with `none` or with an asymmetric algorithm (key-confusion attacks) is refused, and `exp`, `iss`
// and `aud` are mandatory. The token itself is never logged (common/logger.ts redacts `authorization`).
import type { RequestHandler, Response } from 'express';
import { errors, jwtVerify, SignJWT, type JWTPayload } from 'jose';

export interface JwtSettings {
  secret: string;
  issuer: string;
  audience: string;
}

export const JWT_ALGORITHM = 'HS256';

/** What a route may learn about the caller (`res.locals.auth`). */
export interface AuthContext {
  subject: string | null;
}

/** The authenticated caller of this request (set by bearerAuth), or null on unauthenticated routes. */
export function authContext(res: Response): AuthContext | null {
  const a: unknown = res.locals.auth;
  return a && typeof a === 'object' && 'subject' in a ? (a as AuthContext) : null;
}

const key = (secret: string): Uint8Array => new TextEncoder().encode(secret);

export async function verifyToken(token: string, s: JwtSettings): Promise<JWTPayload> {
  const { payload } = await jwtVerify(token, key(s.secret), {
    algorithms: [JWT_ALGORITHM],
    issuer: s.issuer,
    audience: s.audience,
    requiredClaims: ['exp'],
    clockTolerance: 5,
  });
  return payload;
}

export async function signToken(s: JwtSettings, opts: { subject: string; ttl: string | number }): Promise<string> {
  return new SignJWT({})
    .setProtectedHeader({ alg: JWT_ALGORITHM, typ: 'JWT' })
    .setSubject(opts.subject)
    .setIssuer(s.issuer)
    .setAudience(s.audience)
    .setIssuedAt()
    .setExpirationTime(opts.ttl)
    .sign(key(s.secret));
}

/** Why a token was refused, in words that help the caller and reveal nothing about the secret. */
function reason(e: unknown): string {
  if (e instanceof errors.JWTExpired) return 'Token expired';
  if (e instanceof errors.JOSEAlgNotAllowed) return 'Invalid token: algorithm not allowed';
  if (e instanceof errors.JWTClaimValidationFailed) return `Invalid token: "${e.claim}" claim ${e.reason === 'missing' ? 'missing' : 'check failed'}`;
  return 'Invalid token';
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
    try {
      const payload = await verifyToken(m[1], s);
      const auth: AuthContext = { subject: typeof payload.sub === 'string' ? payload.sub : null };
      res.locals.auth = auth;
      next();
    } catch (e) {
      refuse(reason(e));
    }
  };
}
