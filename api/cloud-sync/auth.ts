// Center authentication for cloud sync: every center signs with its own key, the cloud keeps only the public
// key (`centers.public_jwk`). The JWT names its center in `kid` (and `sub`); the algorithm allow-list is
// asymmetric only, so `none` and HMAC tokens forged with a public key are refused; `exp`, `iss` and `aud` are
// mandatory. A refusal is a 401 whose detail says why; the token is never logged.
import type { RequestHandler, Response } from 'express';
import { decodeProtectedHeader, errors, exportJWK, generateKeyPair, importJWK, jwtVerify, SignJWT, type JWK } from 'jose';
import type { CloudSyncModels } from '../../common/models/cloud-sync';

export const CENTER_JWT_ALGORITHMS = ['EdDSA', 'ES256'] as const;
export type CenterJwtAlgorithm = (typeof CENTER_JWT_ALGORITHMS)[number];
/** The audience of center tokens: a token for the OTA API (or anything else) is not a cloud-sync token. */
export const CENTER_JWT_AUDIENCE = 'fleetsync-cloud-sync';

export interface CenterAuthSettings {
  issuer: string;
  models: Pick<CloudSyncModels, 'Center'>;
}

export class CenterAuthError extends Error {
  override name = 'CenterAuthError';
}

/** Verifies a center token; resolves to the center id. */
export async function verifyCenterToken(token: string, s: CenterAuthSettings): Promise<string> {
  let kid: string | undefined;
  try {
    kid = decodeProtectedHeader(token).kid;
  } catch {
    throw new CenterAuthError('Invalid token: malformed');
  }
  if (!kid) throw new CenterAuthError('Invalid token: "kid" header (center id) missing');
  const center = await s.models.Center.findById(kid).lean();
  if (!center) throw new CenterAuthError('Invalid token: unknown center');
  try {
    const key = await importJWK(center.public_jwk as JWK, center.alg);
    const { payload } = await jwtVerify(token, key, {
      algorithms: [center.alg],
      issuer: s.issuer,
      audience: CENTER_JWT_AUDIENCE,
      subject: kid,
      requiredClaims: ['exp'],
      clockTolerance: 5,
    });
    return payload.sub as string;
  } catch (e) {
    throw new CenterAuthError(reason(e));
  }
}

function reason(e: unknown): string {
  if (e instanceof errors.JWTExpired) return 'Token expired';
  if (e instanceof errors.JOSEAlgNotAllowed) return 'Invalid token: algorithm not allowed';
  if (e instanceof errors.JWSSignatureVerificationFailed) return 'Invalid token: signature verification failed (wrong key)';
  if (e instanceof errors.JWTClaimValidationFailed) return `Invalid token: "${e.claim}" claim ${e.reason === 'missing' ? 'missing' : 'check failed'}`;
  return 'Invalid token';
}

/** The authenticated center of this request (set by centerAuth). */
export const requestCenter = (res: Response): string => String(res.locals.centerId);

export function centerAuth(s: CenterAuthSettings): RequestHandler {
  return async (req, res, next) => {
    const refuse = (detail: string) => {
      res.status(401).set('WWW-Authenticate', 'Bearer').json({ detail });
    };
    const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
    if (!m) return refuse(req.headers.authorization ? 'Invalid authorization header: expected "Bearer <token>"' : 'Not authenticated');
    try {
      res.locals.centerId = await verifyCenterToken(m[1], s);
      next();
    } catch (e) {
      if (e instanceof CenterAuthError) return refuse(e.message);
      next(e);
    }
  };
}

export interface CenterKey {
  alg: CenterJwtAlgorithm;
  publicJwk: JWK;
  privateJwk: JWK;
}

export async function newCenterKey(alg: CenterJwtAlgorithm = 'EdDSA'): Promise<CenterKey> {
  const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
  return { alg, publicJwk: await exportJWK(publicKey), privateJwk: await exportJWK(privateKey) };
}

export async function signCenterToken(key: Pick<CenterKey, 'alg' | 'privateJwk'>, o: { centerId: string; issuer: string; ttl: string | number }): Promise<string> {
  return new SignJWT({})
    .setProtectedHeader({ alg: key.alg, kid: o.centerId, typ: 'JWT' })
    .setSubject(o.centerId)
    .setIssuer(o.issuer)
    .setAudience(CENTER_JWT_AUDIENCE)
    .setIssuedAt()
    .setExpirationTime(o.ttl)
    .sign(await importJWK(key.privateJwk, key.alg));
}
