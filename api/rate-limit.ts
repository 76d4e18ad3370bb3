// Per-token request rate limit of the cloud API (express-rate-limit, fixed window, in-process memory store):
// at most `limit` requests per `windowMs` for one token, keyed by its id (jti) or, for a token without one, by a
// hash of the token. Beyond it: 429 with Retry-After and the standard RateLimit headers. With several API
// processes behind a load balancer each counts on its own (a limit per process). Runs after bearerAuth, so it
// counts authenticated requests only; a 401 costs one signature check and nothing else.
import crypto from 'node:crypto';
import type { RequestHandler } from 'express';
import { rateLimit } from 'express-rate-limit';
import { authContext } from './auth';

export interface RateLimitSettings {
  /** Requests per window per token; 0 turns the limit off. */
  rateLimit: number;
  rateLimitWindowMs: number;
}

export function perTokenRateLimit(s: RateLimitSettings): RequestHandler {
  if (s.rateLimit === 0) return (_req, _res, next) => next();
  const windowS = Math.ceil(s.rateLimitWindowMs / 1000);
  return rateLimit({
    windowMs: s.rateLimitWindowMs,
    limit: s.rateLimit,
    standardHeaders: 'draft-8',
    legacyHeaders: false,
    identifier: 'per-token',
    keyGenerator: (req, res) =>
      authContext(res)?.tokenId ?? `sha256:${crypto.createHash('sha256').update(req.headers.authorization ?? '').digest('hex')}`,
    handler: (_req, res) => {
      res.status(429).json({
        detail: `Rate limit exceeded: at most ${s.rateLimit} requests per ${windowS} s per token (API_RATE_LIMIT); retry after ${res.getHeader('Retry-After') ?? windowS} s`,
      });
    },
    // The key is a token id, never an address: the checks about client addresses and proxies do not apply.
    validate: { ip: false, trustProxy: false, xForwardedForHeader: false, forwardedHeader: false, keyGeneratorIpFallback: false },
  });
}
