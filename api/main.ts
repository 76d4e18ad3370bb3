// Entry point of the cloud OTA API: connects MongoDB, S3 and Temporal from the configuration, serves /api/v1 on
// API_PORT, runs the job reconciler (PENDING jobs left without a workflow) and shuts down gracefully on
// SIGTERM/SIGINT (in-flight uploads may finish, then connections close).
import { Connection, WorkflowClient } from '@temporalio/client';
import { createS3Client } from '../activities/s3/client';
import { loadConfig } from '../common/config';
import { connectDb } from '../common/db';
import { createLogger } from '../common/logger';
import express from 'express';
import { cloudSyncRouter } from './cloud-sync/router';
import { createOtaApp } from './ota/app';
import { JobReconciler } from './ota/reconciler';
import { DEFAULT_BUCKET, type OtaAppDeps } from './ota/types';
import { closeServer, listen } from './server';

async function main(): Promise<void> {
  const cfg = loadConfig();
  const log = createLogger('ota-api', cfg.logLevel);
  const db = await connectDb(cfg);
  const s3 = createS3Client(cfg);
  const connection = await Connection.connect({ address: cfg.temporal.address });
  const temporal = new WorkflowClient({ connection, namespace: cfg.temporal.namespace });
  // The OTA API reads and writes only in these buckets: the reference's default. The store also holds other
  // services' buckets (cloud-sync's robot-files) that OTA callers must not reach.
  const deps: OtaAppDeps = { cfg, models: db.models, s3, temporal, log, otaBuckets: [DEFAULT_BUCKET] };
  const app = express();
  app.disable('x-powered-by');
  // Cloud sync first: its routes are authenticated by center JWTs, not by the OTA API's operator tokens.
  app.use('/api/v1', cloudSyncRouter({ cfg, models: db.cloudSync, robots: db.models.Robot, s3, log: log.child({ component: 'cloud-sync' }) }));
  const ota = createOtaApp(deps);
  app.use(ota);
  const reconciler = new JobReconciler(deps);
  reconciler.start();
  // All interfaces, like the reference (port 9005): every route but /health and the docs needs a token.
  const server = await listen(app, cfg.api.port, cfg.api.host);
  log.info({ host: cfg.api.host, port: cfg.api.port, namespace: cfg.temporal.namespace, taskQueue: cfg.temporal.taskQueue }, 'OTA API listening');

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    try {
      await closeServer(server);
      await reconciler.stop();
      // The requests are all answered now: the audit entries they left are stored before the database closes.
      // Bounded: a database that does not answer must not hold the process (the entries are logged if not stored).
      await Promise.race([ota.flushAudit(), new Promise((r) => setTimeout(r, cfg.mongo.timeoutMs).unref())]);
      await Promise.allSettled([db.close(), connection.close()]);
      s3.destroy();
      log.info('stopped');
      process.exit(0);
    } catch (err) {
      log.error({ err }, 'shutdown failed');
      process.exit(1);
    }
  };
  process.once('SIGTERM', () => void stop('SIGTERM'));
  process.once('SIGINT', () => void stop('SIGINT'));
}

main().catch((e: unknown) => {
  // The logger may not exist yet (bad configuration): plain stderr, message only (no config dump, no secrets).
  process.stderr.write(`OTA API failed to start: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
