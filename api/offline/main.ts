// Entry point of the offline app's API (a center's computer): connects its own database and the center's
// Temporal namespace, serves /api on OFFLINE_API_PORT and shuts down gracefully on SIGTERM/SIGINT.
import { Connection, WorkflowClient } from '@temporalio/client';
import { loadConfig } from '../../common/config';
import { connectOfflineDb } from '../../common/db';
import { createLogger } from '../../common/logger';
import { closeServer, listen } from '../server';
import { createOfflineApp } from './app';
import { robotsRouter } from './robots';

async function main(): Promise<void> {
  const cfg = loadConfig();
  const log = createLogger('offline-api', cfg.logLevel);
  const db = await connectOfflineDb(cfg);
  const connection = await Connection.connect({ address: cfg.offline.temporal.address });
  const temporal = new WorkflowClient({ connection, namespace: cfg.offline.temporal.namespace });
  const app = createOfflineApp({ cfg, db, temporal, log, routers: [robotsRouter({ cfg, models: db.models, temporal })] });
  const { host, port } = cfg.offline.api;
  const server = await listen(app, port, host);
  log.info({ host, port, centerId: cfg.offline.centerId, namespace: cfg.offline.temporal.namespace }, 'offline API listening');

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    await closeServer(server).catch((err: unknown) => log.error({ err }, 'close failed'));
    await Promise.allSettled([db.close(), connection.close()]);
    log.info('stopped');
    process.exit(0);
  };
  process.once('SIGTERM', () => void stop('SIGTERM'));
  process.once('SIGINT', () => void stop('SIGINT'));
}

main().catch((e: unknown) => {
  process.stderr.write(`offline API failed to start: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
