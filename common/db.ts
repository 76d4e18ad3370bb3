// One mongoose connection per process, with every model registered on it (not on the global mongoose), so
// activity factories and the API receive their models explicitly and tests can open their own connection.
// Habits that keep the code valid on both MongoDB and the local FerretDB (notes in infra/README.md): natural
// string ids, bulk writes in chunks of <= 50, a timeout on every operation, no transactions/$lookup/TTL.
import mongoose, { type Connection } from 'mongoose';
import type { Config } from './config';
import { registerCloudSyncModels, type CloudSyncModels } from './models/cloud-sync';
import { registerOfflineModels, type OfflineModels } from './models/offline';
import { registerOtaModels, type OtaModels } from './models/ota';
import { registerRobotModels, type RobotModels } from './models/robots';
import { registerSecurityModels, type SecurityModels } from './models/security';

/** Every model of the cloud database. */
export type CloudModels = OtaModels & SecurityModels & RobotModels;

export interface Db {
  connection: Connection;
  models: CloudModels;
  /** Cloud sync: centers, upstream records, catalogue, RFs, perfect states, version maps. */
  cloudSync: CloudSyncModels;
  close(): Promise<void>;
}

function openConnection(cfg: Config, dbName: string): Connection {
  return mongoose.createConnection(cfg.mongo.url, {
    dbName,
    serverSelectionTimeoutMS: cfg.mongo.timeoutMs,
    socketTimeoutMS: cfg.mongo.timeoutMs * 3,
    // FerretDB has no retryable writes (no replica set); MongoDB production sets this through MONGO_URL.
    retryWrites: false,
  });
}

export async function connectDb(cfg: Config, dbName = cfg.mongo.db): Promise<Db> {
  const connection = openConnection(cfg, dbName);
  await connection.asPromise();
  const models: CloudModels = {
    ...registerOtaModels(connection, cfg.mongo.timeoutMs),
    ...registerSecurityModels(connection, cfg.mongo.timeoutMs),
    ...registerRobotModels(connection, cfg.mongo.timeoutMs),
  };
  const cloudSync = registerCloudSyncModels(connection, cfg.mongo.timeoutMs);
  await Promise.all([...Object.values(models), ...Object.values(cloudSync)].map((m) => m.init()));
  return { connection, models, cloudSync, close: () => connection.close() };
}

export interface OfflineDb {
  connection: Connection;
  models: OfflineModels;
  close(): Promise<void>;
}

/** The offline app's own database (OFFLINE_MONGO_DB; locally on the same server as the cloud's). */
export async function connectOfflineDb(cfg: Config, dbName = cfg.offline.mongoDb): Promise<OfflineDb> {
  const connection = openConnection(cfg, dbName);
  await connection.asPromise();
  const models = registerOfflineModels(connection, cfg.mongo.timeoutMs);
  await Promise.all([models.Robot, models.PerfectStateEntry, models.PerfectStatePart, models.InventoryEntry, models.StaticImage, models.SyncState].map((m) => m.init()));
  await Promise.all([...Object.values(models.downstream), ...Object.values(models.upstream)].map((m) => m.init()));
  return { connection, models, close: () => connection.close() };
}

/**
 * Documents per insert command: inserts of new ids do not hang FerretDB the way updates of 100 statements do (150
 * inserts: 92 ms, STACK.md), and each insert command is its own commit, so fewer and larger ones cost less.
 */
export const INSERT_CHUNK = 500;

// Bulk writes are split by chunks(): FerretDB hangs on one update command of >= 100 statements (infra/README.md).
export { chunks } from './limit';
