// Composition root of the offline app's worker (a center's computer): registers the offline workflows and their
// activities on the center's own Temporal namespace and task queue. Only wiring lives here.
import { NativeConnection, Worker } from '@temporalio/worker';
import { assertOfflineConfig, loadConfig } from '../common/config';
import { connectOfflineDb } from '../common/db';
import { createLogger } from '../common/logger';
import { installTemporalLogger } from './temporal-logger';
import { createRobotInventoryActivities } from '../activities/ssh/inventory';

async function main(): Promise<void> {
  const cfg = loadConfig();
  assertOfflineConfig(cfg);
  const log = createLogger('offline-worker', cfg.logLevel);
  installTemporalLogger(log);
  const db = await connectOfflineDb(cfg);
  const connection = await NativeConnection.connect({ address: cfg.offline.temporal.address });

  const activities = {
    ...createRobotInventoryActivities({ models: db.models, cfg }),
  };

  const worker = await Worker.create({
    connection,
    namespace: cfg.offline.temporal.namespace,
    taskQueue: cfg.offline.temporal.taskQueue,
    workflowsPath: require.resolve('../workflows/offline'),
    activities,
    maxConcurrentActivityTaskExecutions: cfg.temporal.maxConcurrentActivities,
    // In-flight downloads get time to heartbeat their last offset before the worker exits.
    shutdownGraceTime: '10s',
  });
  const { namespace, taskQueue } = cfg.offline.temporal;
  log.info({ centerId: cfg.offline.centerId, namespace, taskQueue }, 'offline worker started');
  await worker.run();
  await Promise.allSettled([db.close(), connection.close()]);
  log.info('offline worker stopped');
}

main().catch((err: unknown) => {
  createLogger('offline-worker').fatal({ err }, 'offline worker failed');
  process.exit(1);
});
