// The OTA file service: an Express app with everything under /api/v1, compatible with the reference
// (nvidia-isaac/ota-file-service) plus authentication, jobs that Temporal drives to a terminal state, streaming
// uploads/downloads and the reference's bugs fixed (notes/ota-file-service.md §6).
// Operator security, in request order: bearer token (401, revoked ids too) → per-token rate limit (429) → audit
// trail of mutating requests → each route's requireRole (403) and, for deploys, the token's robot scope.
import express, { Router, type Express, type RequestHandler } from 'express';
import swaggerUi from 'swagger-ui-express';
import type { Logger } from '../../common/logger';
import { auditTrail } from '../audit';
import { createApiMetrics } from '../metrics';
import { authContext, bearerAuth, operatorJwtSettings, requireRole } from '../auth';
import { perTokenRateLimit } from '../rate-limit';
import { RevocationList } from '../revocations';
import { errorHandler, notFoundHandler } from './errors';
import { buildOpenApiDocument } from './openapi';
import { adminRouter } from './routes/admin';
import { deployRouter } from './routes/deploy';
import { filesRouter } from './routes/files';
import { healthRouter } from './routes/health';
import { jobsRouter } from './routes/jobs';
import { robotsRouter } from './routes/robots';
import { rolloutsRouter } from './routes/rollouts';
import { resolveContext, type OtaAppDeps, type OtaContext } from './types';
import { uiRouter } from '../ui-static';

export const API_PREFIX = '/api/v1';

/** One line per request: method, path with query, status, duration, caller. Never headers (tokens live there). */
function requestLog(log: Logger): RequestHandler {
  return (req, res, next) => {
    const start = process.hrtime.bigint();
    res.on('finish', () => {
      const ms = Number(process.hrtime.bigint() - start) / 1e6;
      const sub = authContext(res)?.subject;
      log.info({ method: req.method, path: req.originalUrl, status: res.statusCode, ms: Math.round(ms), sub }, 'request');
    });
    next();
  };
}

/**
 * What the API's shutdown must run before it closes the database: the audit trail gathers entries over a short
 * window, and the entries of the last requests would be lost if the connection closed under them.
 */
export interface OtaShutdown {
  /** Stores the audit entries still gathered; resolves once they are stored (or logged as not stored). */
  flushAudit(): Promise<void>;
}

/** The /api/v1 router, for composing with the cloud API's other routers. */
export function createOtaRouter(deps: OtaAppDeps): Router & OtaShutdown {
  const ctx: OtaContext = resolveContext(deps);
  const r = Router();
  r.use(healthRouter(ctx));
  const doc = buildOpenApiDocument();
  r.get('/openapi.json', (_req, res) => {
    res.json(doc);
  });
  r.use('/docs', swaggerUi.serve, swaggerUi.setup(doc, { customSiteTitle: 'OTA File Service API', customCss: '' }));

  const api = ctx.cfg.api;
  const revocations = new RevocationList(ctx.models.RevokedToken, { refreshMs: api.revocationRefreshMs, maxTokenTtlMs: api.tokenMaxTtlMs });
  r.use(bearerAuth(operatorJwtSettings(api, (jti) => revocations.isRevoked(jti))));
  r.use(perTokenRateLimit(api));
  const audit = auditTrail(ctx.models.AuditEntry, ctx.log);
  r.use(audit);
  r.use(filesRouter(ctx));
  r.use(deployRouter(ctx));
  r.use(jobsRouter(ctx));
  r.use(adminRouter(ctx, revocations));
  r.use(rolloutsRouter(ctx, { read: requireRole('viewer'), mutate: requireRole('operator') }));
  r.use(robotsRouter(ctx, requireRole('admin')));
  r.use(notFoundHandler);
  r.use(errorHandler(ctx.log));
  return Object.assign(r, { flushAudit: () => audit.flush() });
}

export function createOtaApp(deps: OtaAppDeps): Express & OtaShutdown {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false); // JSON answers change with every job transition; downloads carry S3's own ETag
  app.set('trust proxy', deps.cfg.api.trustProxy); // req.ip, the audit trail's client address, behind a proxy
  app.use(requestLog(deps.log.child({ component: 'http' })));
  // Prometheus scrapes without a token, like /health: counts and latencies only, no ids or names.
  const metrics = createApiMetrics(deps.models, deps.cfg.mongo.timeoutMs);
  app.use(metrics.middleware);
  app.get('/metrics', (_req, res, next) => {
    metrics.registry.metrics().then((text) => res.type(metrics.registry.contentType).send(text), next);
  });
  const ota = createOtaRouter(deps);
  app.use(API_PREFIX, ota);
  // The operator UI: a static app that calls /api/v1 with the operator's own token.
  app.use(
    '/ui',
    uiRouter('operator', () => ({
      apiBase: API_PREFIX,
      temporalWebUrl: deps.cfg.temporal.webUrl,
      temporalNamespace: deps.cfg.temporal.namespace,
    })),
  );
  app.get('/', (_req, res) => res.redirect('/ui/'));
  app.use(notFoundHandler);
  app.use(errorHandler(deps.log));
  return Object.assign(app, { flushAudit: () => ota.flushAudit() });
}
