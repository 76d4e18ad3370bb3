// The offline app's HTTP API (a center's computer): health now; cloud sync and robot sync start and report
// their workflows on the center's own Temporal. Later the specialist UI is served from here too.
import express, { type Express, type Router } from 'express';
import type { WorkflowClient } from '@temporalio/client';
import type { Config } from '../../common/config';
import type { OfflineDb } from '../../common/db';
import type { Logger } from '../../common/logger';
import { errorHandler, notFoundHandler } from '../ota/errors';
import { uiRouter } from '../ui-static';
import { syncRouter } from './sync-routes';

export interface OfflineAppDeps {
  cfg: Config;
  db: OfflineDb;
  temporal: WorkflowClient;
  log: Logger;
  /** More routers (robot sync, UI), mounted under /api after the built-in ones. */
  routers?: Router[];
}

export function createOfflineApp(deps: OfflineAppDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.use(express.json({ limit: '1mb' }));
  app.get('/api/health', async (_req, res) => {
    const db = await deps.db.connection.db!.admin().command({ ping: 1 }).then(() => 'ok', (e: unknown) => String(e));
    const ok = db === 'ok';
    res.status(ok ? 200 : 503).json({ status: ok ? 'ok' : 'degraded', center_id: deps.cfg.offline.centerId, database: db });
  });
  app.use('/api', syncRouter(deps));
  for (const r of deps.routers ?? []) app.use('/api', r);
  app.use('/api', notFoundHandler);
  // The specialist UI (a static app calling /api): robots, "Synchronize" and "Update Robots" with live progress.
  app.use(
    '/',
    uiRouter('specialist', () => ({
      apiBase: '/api',
      centerId: deps.cfg.offline.centerId,
      temporalWebUrl: deps.cfg.offline.temporal.webUrl,
      temporalNamespace: deps.cfg.offline.temporal.namespace,
    })),
  );
  app.use(notFoundHandler);
  app.use(errorHandler(deps.log));
  return app;
}
