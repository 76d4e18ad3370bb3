// Cloud sync as real processes for end-to-end tests: the cloud API (own database) and, per center, the offline
// worker (own offline database, RF cache, task queue, JWT). Robots are the test fleet's sshd robots; each center
// gets its own rf_root directories on them, so tests never see each other's files.
import { Client, Connection, type WorkflowHandleWithFirstExecutionRunId } from '@temporalio/client';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createS3Client } from '../../activities/s3/client';
import type { CenterKey } from '../../api/cloud-sync/auth';
import { centerKeyFile, readDataSet, seedCloudSync, type DataSet, type SeedResult } from '../../api/cloud-sync/seed';
import { seedOfflineRobots } from '../../api/offline/seed';
import { connectDb, connectOfflineDb, type Db, type OfflineDb } from '../../common/db';
import type { RobotManifest } from '../../infra/fleet';
import { DEMO_DATA_SET } from '../../infra/seed';
import { cloudSync, cloudSyncWorkflowId, type CloudSyncResult } from '../../workflows/offline/cloud-sync';
import { cfg, fleet, runTs, uniqueId, type ChildHandle } from '../helpers';
import { freePort } from '../ota/system';

export interface CloudSide {
  baseUrl: string;
  env: Record<string, string>;
  db: Db;
  api: ChildHandle | null;
  startApi(): Promise<void>;
  stopApi(signal?: NodeJS.Signals): Promise<void>;
  close(): Promise<void>;
}

export async function startCloud(): Promise<CloudSide> {
  const port = await freePort();
  const env = { MONGO_DB: uniqueId('cloud_sync').replace(/-/g, '_'), API_PORT: String(port), API_PUBLIC_URL: `http://127.0.0.1:${port}`, TEMPORAL_TASK_QUEUE: uniqueId('cloud-sync-api') };
  const db = await connectDb(cfg, env.MONGO_DB);
  const side: CloudSide = {
    baseUrl: `http://127.0.0.1:${port}`,
    env,
    db,
    api: null,
    async startApi() {
      side.api = runTs('api/main.ts', env);
      await side.api.waitForOutput('OTA API listening', 60000);
    },
    async stopApi(signal = 'SIGTERM') {
      await side.api?.kill(signal);
      side.api = null;
    },
    async close() {
      await side.stopApi();
      await db.connection.dropDatabase().catch(() => undefined);
      await db.close();
    },
  };
  await side.startApi();
  return side;
}

export interface Center {
  id: string;
  token: string;
  /** The center's signing key (what its installer holds), for tests that forge or re-sign tokens. */
  key: CenterKey;
  seed: SeedResult;
  robots: RobotManifest[];
  /** Each robot's rf_root for this center. */
  rfRoots: Map<string, string>;
  cacheDir: string;
  env: Record<string, string>;
  db: OfflineDb;
  worker: ChildHandle | null;
  temporal: Client;
  startWorker(extraEnv?: Record<string, string>): Promise<ChildHandle>;
  /** Starts a cloudSync run directly on the center's Temporal and returns its handle. */
  start(): Promise<WorkflowHandleWithFirstExecutionRunId<typeof cloudSync>>;
  sync(): Promise<CloudSyncResult>;
  close(): Promise<void>;
}

export interface CenterOptions {
  robots: RobotManifest[];
  dataSet?: DataSet;
  large?: boolean;
  /** Robots connected in the offline app (default all). */
  connected?: boolean;
}

export async function createCenter(cloud: CloudSide, o: CenterOptions): Promise<Center> {
  const id = uniqueId('center');
  const base = fs.mkdtempSync(path.join(os.tmpdir(), `${id}-`));
  const rfRoots = new Map(o.robots.map((r) => [r.id, path.join(r.root, id)]));
  const s3 = createS3Client(cfg);
  const seed = await seedCloudSync({ ...cfg, dataDir: base }, cloud.db, s3, {
    dataSet: o.dataSet ?? readDataSet(DEMO_DATA_SET),
    centerId: id,
    robots: o.robots.map((r) => ({ id: r.id, rfRoot: rfRoots.get(r.id)! })),
    large: o.large,
    tokenTtl: '1h',
  });
  s3.destroy();
  const env: Record<string, string> = {
    CENTER_ID: id,
    CENTER_JWT: seed.token,
    CLOUD_API_URL: cloud.baseUrl,
    OFFLINE_MONGO_DB: id.replace(/-/g, '_'),
    OFFLINE_TASK_QUEUE: id,
    RF_CACHE_DIR: path.join(base, 'rf-cache'),
  };
  const db = await connectOfflineDb(cfg, env.OFFLINE_MONGO_DB);
  const f = fleet();
  await seedOfflineRobots(db.models, f.clientKeyFile, o.robots);
  for (const r of o.robots) {
    fs.mkdirSync(rfRoots.get(r.id)!, { recursive: true });
    await db.models.Robot.updateOne({ _id: r.id }, { $set: { rf_root: rfRoots.get(r.id)!, connected: o.connected ?? true } });
  }
  const connection = await Connection.connect({ address: cfg.offline.temporal.address });
  const temporal = new Client({ connection, namespace: cfg.offline.temporal.namespace });
  const c: Center = {
    id,
    token: seed.token,
    key: JSON.parse(fs.readFileSync(centerKeyFile({ ...cfg, dataDir: base }, id), 'utf8')) as CenterKey,
    seed,
    robots: o.robots,
    rfRoots,
    cacheDir: env.RF_CACHE_DIR,
    env,
    db,
    worker: null,
    temporal,
    async startWorker(extraEnv = {}) {
      c.worker = runTs('workers/offline-worker.ts', { ...env, ...extraEnv });
      await c.worker.waitForOutput('offline worker started', 90000);
      return c.worker;
    },
    start: () =>
      temporal.workflow.start(cloudSync, { workflowId: cloudSyncWorkflowId(id), taskQueue: id, args: [{ centerId: id }], workflowExecutionTimeout: '10m' }),
    async sync() {
      return (await c.start()).result();
    },
    async close() {
      await c.worker?.kill();
      await connection.close();
      await db.connection.dropDatabase().catch(() => undefined);
      await db.close();
      for (const root of rfRoots.values()) fs.rmSync(root, { recursive: true, force: true });
      fs.rmSync(base, { recursive: true, force: true });
    },
  };
  return c;
}

/** Cache entries (sha256 names) and leftovers (anything else) of a center's RF cache. */
export function cacheContents(c: Center): { rfs: string[]; other: string[] } {
  const names = fs.existsSync(c.cacheDir) ? fs.readdirSync(c.cacheDir) : [];
  return { rfs: names.filter((n) => /^[0-9a-f]{64}$/.test(n)).sort(), other: names.filter((n) => !/^[0-9a-f]{64}$/.test(n)) };
}
