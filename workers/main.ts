// Composition root of the fleet worker: builds every activity from its clients and registers the workflows on
// the task queue. Only wiring lives here.
import { NativeConnection, Worker } from '@temporalio/worker';
import fs from 'node:fs';
import path from 'node:path';
import { loadConfig } from '../common/config';
import { connectDb } from '../common/db';
import { createLogger } from '../common/logger';
import { portFree } from '../common/metrics';
import { createStackProbeActivities } from './probe-activities';
import { installTemporalLogger } from './temporal-logger';
import { bundleWorkflowsInChild } from './workflow-bundle';
import { robotDirectoryFromFleet } from '../common/robot-directory';
import { connectMqtt, uniqueClientId } from '../activities/mqtt/connection';
import { createOtaMqttActivities } from '../activities/mqtt/ota';
import { createOtaRolloutActivities } from '../activities/mqtt/ota-rollout';
import { createOtaJobActivities } from '../activities/db/ota-jobs';
import { createS3Client } from '../activities/s3/client';
import { fleetManifestPath, type FleetManifest } from '../infra/fleet';

async function main(): Promise<void> {
  const cfg = loadConfig();
  const log = createLogger('worker', cfg.logLevel);
  let metricsAddress = cfg.metrics.workerPort ? `${cfg.metrics.host}:${cfg.metrics.workerPort}` : undefined;
  if (metricsAddress && !(await portFree(cfg.metrics.workerPort, cfg.metrics.host))) {
    log.warn({ port: cfg.metrics.workerPort }, 'metrics port in use: this worker runs without its /metrics endpoint');
    metricsAddress = undefined;
  }
  installTemporalLogger(log, 'INFO', metricsAddress);
  const manifestFile = fleetManifestPath(cfg);
  const fleet: FleetManifest = fs.existsSync(manifestFile)
    ? (JSON.parse(fs.readFileSync(manifestFile, 'utf8')) as FleetManifest)
    : { clientKeyFile: '', robots: [] };
  const robots = robotDirectoryFromFleet(fleet);
  const db = await connectDb(cfg);
  const s3 = createS3Client(cfg);
  const connection = await NativeConnection.connect({ address: cfg.temporal.address });
  // Workers only publish (deploy/ack/cancel): a clean session with a per-process id, so several workers coexist.
  const mqtt = await connectMqtt(cfg, { clientId: uniqueClientId('cloud-worker'), log });

  const activities = {
    ...createStackProbeActivities({ cfg, db: db.connection, s3, robots }),
    ...createOtaMqttActivities({ mqtt, models: db.models, s3, cfg }),
    ...createOtaRolloutActivities({ mqtt, models: db.models, s3, cfg }),
    ...createOtaJobActivities({ models: db.models, dbTimeoutMs: cfg.mongo.timeoutMs }),
  };

  const workflows = await bundleWorkflowsInChild(require.resolve('../workflows'), path.join(cfg.dataDir, 'cache', 'workflow-bundles'));
  const worker = await Worker.create({
    connection,
    namespace: cfg.temporal.namespace,
    taskQueue: cfg.temporal.taskQueue,
    workflowBundle: workflows.bundle,
    activities,
    maxConcurrentActivityTaskExecutions: cfg.temporal.maxConcurrentActivities,
    // In-flight activities get time to heartbeat their last offset before the worker exits.
    shutdownGraceTime: '10s',
  });
  log.info({ taskQueue: cfg.temporal.taskQueue, namespace: cfg.temporal.namespace, robots: robots.ids().length, metrics: metricsAddress ?? null, workflowBundleFromCache: workflows.fromCache }, 'worker started');
  await worker.run();
  await Promise.allSettled([db.close(), connection.close(), mqtt.endAsync()]);
  s3.destroy();
  log.info('worker stopped');
}

main().catch((err: unknown) => {
  createLogger('worker').fatal({ err }, 'worker failed');
  process.exit(1);
});
