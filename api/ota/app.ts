// The OTA file service: an Express app with everything under /api/v1, compatible with the reference
// (nvidia-isaac/ota-file-service) plus authentication, jobs that Temporal drives to a terminal state, streaming
// uploads/downloads and the reference's bugs fixed (notes/ota-file-service.md §6).
import express, { Router, type Express, type RequestHandler } from 'express';
import swaggerUi from 'swagger-ui-express';
import type { Logger } from '../../common/logger';
import { authContext, bearerAuth } from '../auth';
import { errorHandler, notFoundHandler } from './errors';
import { buildOpenApiDocument } from './openapi';
import { deployRouter } from './routes/deploy';
import { filesRouter } from './routes/files';
import { healthRouter } from './routes/health';
import { jobsRouter } from './routes/jobs';
import { robotsRouter } from './routes/robots';
import { rolloutsRouter } from './routes/rollouts';
import { resolveContext, type OtaAppDeps, type OtaContext } from './types';

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

/** The /api/v1 router, for composing with the cloud API's other routers. */
export function createOtaRouter(deps: OtaAppDeps): Router {
  const ctx: OtaContext = resolveContext(deps);
  const r = Router();
  r.use(healthRouter(ctx));
  const doc = buildOpenApiDocument();
  r.get('/openapi.json', (_req, res) => {
    res.json(doc);
  });
  r.use('/docs', swaggerUi.serve, swaggerUi.setup(doc, { customSiteTitle: 'OTA File Service API', customCss: '' }));

  r.use(bearerAuth({ secret: ctx.cfg.api.jwtSecret, issuer: ctx.cfg.api.jwtIssuer, audience: ctx.cfg.api.jwtAudience }));
  r.use(filesRouter(ctx));
  r.use(deployRouter(ctx));
  r.use(jobsRouter(ctx));
  // INTEGRATOR (issue 15): rolloutsRouter(ctx, { read: requireRole('viewer'), mutate: requireRole('operator') }).
  r.use(rolloutsRouter(ctx));
  // INTEGRATOR (issue 15): robotsRouter(ctx, requireRole('admin')).
  r.use(robotsRouter(ctx));
  r.use(notFoundHandler);
  r.use(errorHandler(ctx.log));
  return r;
}

export function createOtaApp(deps: OtaAppDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false); // JSON answers change with every job transition; downloads carry S3's own ETag
  app.use(requestLog(deps.log.child({ component: 'http' })));
  app.use(API_PREFIX, createOtaRouter(deps));
  app.use(notFoundHandler);
  app.use(errorHandler(deps.log));
  return app;
}
