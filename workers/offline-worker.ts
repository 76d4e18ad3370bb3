// Composition root of the offline app's worker (a center's computer): registers the offline workflows and their
// activities on the center's own Temporal namespace and task queue. Only wiring lives here.
import path from 'node:path';
import { NativeConnection, Worker } from '@temporalio/worker';
import { assertOfflineConfig, loadConfig } from '../common/config';
import { connectOfflineDb } from '../common/db';
import { createLogger } from '../common/logger';
import { installTemporalLogger } from './temporal-logger';
import { bundleWorkflowsInChild } from './workflow-bundle';
import { Client, Connection } from '@temporalio/client';
import { createRobotInventoryActivities } from '../activities/ssh/inventory';
import { createRobotSyncActivities, type ProgressSink } from '../activities/ssh/robot-sync';
import { robotProgressSignal } from '../workflows/offline/robot-sync';
import { createCloudSyncDbActivities } from '../activities/db/cloud-sync';
import { createCloudSyncHttpActivities } from '../activities/http/cloud-sync';
import { createFileActivities } from '../activities/files/rf-cache';

async function main(): Promise<void> {
  const cfg = loadConfig();
  assertOfflineConfig(cfg);
  const log = createLogger('offline-worker', cfg.logLevel);
  installTemporalLogger(log);
  const db = await connectOfflineDb(cfg);
  const connection = await NativeConnection.connect({ address: cfg.offline.temporal.address });

  // Upload progress reaches the robotSync workflow as signals (it holds the progress the UI queries).
  const clientConnection = await Connection.connect({ address: cfg.offline.temporal.address });
  const client = new Client({ connection: clientConnection, namespace: cfg.offline.temporal.namespace });
  const progress: ProgressSink = (workflowId, p) => client.workflow.getHandle(workflowId).signal(robotProgressSignal, p);

  const activities = {
    ...createRobotInventoryActivities({ models: db.models, cfg }),
    ...createRobotSyncActivities({ models: db.models, cfg, progress }),
    ...createCloudSyncHttpActivities({ models: db.models, cfg }),
    ...createCloudSyncDbActivities({ models: db.models, cfg }),
    ...createFileActivities({ cfg }),
  };

  const workflows = await bundleWorkflowsInChild(require.resolve('../workflows/offline'), path.join(cfg.dataDir, 'cache', 'workflow-bundles'));
  const worker = await Worker.create({
    connection,
    namespace: cfg.offline.temporal.namespace,
    taskQueue: cfg.offline.temporal.taskQueue,
    workflowBundle: workflows.bundle,
    activities,
    maxConcurrentActivityTaskExecutions: cfg.temporal.maxConcurrentActivities,
    // In-flight downloads get time to heartbeat their last offset before the worker exits.
    shutdownGraceTime: '10s',
    // A large upload's offset reaches the server at least once a second: a crash loses at most ~1 s of bytes.
    maxHeartbeatThrottleInterval: '1s',
  });
  const { namespace, taskQueue } = cfg.offline.temporal;
  log.info({ centerId: cfg.offline.centerId, namespace, taskQueue, workflowBundleFromCache: workflows.fromCache }, 'offline worker started');
  await worker.run();
  await Promise.allSettled([db.close(), connection.close(), clientConnection.close()]);
  log.info('offline worker stopped');
}

main().catch((err: unknown) => {
  createLogger('offline-worker').fatal({ err }, 'offline worker failed');
  process.exit(1);
});
