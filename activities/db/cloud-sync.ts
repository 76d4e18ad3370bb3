// Cloud sync's database side on the center: which robots need a first inventory, applying the /sync answer to
// the local database, the missing-RF diff, and the sync cursor. Reads the run's files, writes the database,
// returns counts (large data stays out of workflow history).
import path from 'node:path';
import type { Model } from 'mongoose';
import type { Config } from '../../common/config';
import { chunks } from '../../common/db';
import { isFirstAttempt } from '../attempt';
import { markPerfectStateChanged, type OfflineModels } from '../../common/models/offline';
import type { SyncResponse } from '../../api/cloud-sync/router';
import { cachedRfs, centerDirs, readJson, runDir, writeJson } from '../files/rf-cache';
import type { PlannedRf } from '../http/cloud-sync';

export interface ApplyResult {
  inserted: number;
  updated: number;
  deleted: number;
  unchanged: number;
}

export interface RfPlan {
  /** Distinct RFs (by sha256) that no robot that needs them holds and the cache does not have. */
  missing: number;
  bytes: number;
  batches: number;
  /** Perfect-state entries already satisfied by a robot's inventory or by the cache. */
  satisfied: number;
}

/** Most RFs per download activity, and most bytes: small RFs share an activity, a large one has its own. */
const BATCH_FILES = 200;
const BATCH_BYTES = 256 * 1024 * 1024;

interface Keyed {
  _id: string;
}

/**
 * Makes `model`'s documents matching `scope` equal to `docs`, writing only the differences: new ones inserted,
 * changed ones replaced, missing ones deleted (all in chunks of <= 50). One read, linear in the set size.
 */
export async function replaceSet<T extends Keyed>(model: Model<T>, scope: Record<string, unknown>, docs: T[], same: (a: T, b: T) => boolean, timeoutMs: number): Promise<ApplyResult> {
  const existing = new Map((await model.find(scope, null, { maxTimeMS: timeoutMs }).lean<T[]>()).map((d) => [d._id, d]));
  const fresh: T[] = [];
  const changed: T[] = [];
  for (const d of docs) {
    const old = existing.get(d._id);
    if (!old) fresh.push(d);
    else if (!same(old, d)) changed.push(d);
    existing.delete(d._id);
  }
  const raw = model.collection;
  for (const part of chunks(fresh)) await raw.insertMany(part as never[], { ordered: false });
  for (const part of chunks(changed)) await raw.bulkWrite(part.map((d) => ({ replaceOne: { filter: { _id: d._id }, replacement: d } })) as never[], { ordered: false });
  const gone = [...existing.keys()];
  for (const part of chunks(gone)) await model.deleteMany({ _id: { $in: part } } as never);
  return { inserted: fresh.length, updated: changed.length, deleted: gone.length, unchanged: docs.length - fresh.length - changed.length };
}

/**
 * The diff: perfect state - each robot's inventory - the local cache, keyed by strings in hash sets, so it is
 * linear in the number of entries (100k paths take well under a second).
 */
export function missingRfs(
  perfect: Iterable<{ robot_id: string; path: string; sha256: string; size: number; url: string }>,
  inventory: Iterable<{ robot_id: string; path: string; sha256: string }>,
  cached: Set<string>,
): { missing: PlannedRf[]; satisfied: number } {
  const onRobot = new Set<string>();
  for (const i of inventory) onRobot.add(`${i.robot_id}|${i.path}|${i.sha256}`);
  const missing = new Map<string, PlannedRf>();
  let satisfied = 0;
  for (const e of perfect) {
    if (onRobot.has(`${e.robot_id}|${e.path}|${e.sha256}`) || cached.has(e.sha256)) satisfied++;
    else if (!missing.has(e.sha256)) missing.set(e.sha256, { sha256: e.sha256, size: e.size, url: e.url });
  }
  return { missing: [...missing.values()], satisfied };
}

/** Splits the plan into download batches (by count and by bytes). */
export function batchPlan(items: PlannedRf[]): PlannedRf[][] {
  const out: PlannedRf[][] = [];
  let cur: PlannedRf[] = [];
  let bytes = 0;
  for (const rf of items) {
    if (cur.length && (cur.length >= BATCH_FILES || bytes + rf.size > BATCH_BYTES)) {
      out.push(cur);
      cur = [];
      bytes = 0;
    }
    cur.push(rf);
    bytes += rf.size;
  }
  if (cur.length) out.push(cur);
  return out;
}

/** First attempt of this activity; a direct call (outside an activity) has no earlier attempt. */
const firstAttempt = () => isFirstAttempt(true);

export function createCloudSyncDbActivities(deps: { cfg: Config; models: OfflineModels }) {
  const { cfg, models } = deps;
  const dirs = centerDirs(cfg);
  const t = cfg.mongo.timeoutMs;
  const answerOf = (runId: string) => readJson<SyncResponse>(path.join(runDir(dirs, runId), 'sync-response.json'));

  return {
    /** Connected robots never inventoried: a new install's first sync takes their inventory before the diff. */
    async robotsWithoutInventory(): Promise<string[]> {
      const robots = await models.Robot.find({ connected: true, last_inventory_at: null }, { _id: 1 }, { maxTimeMS: t }).lean();
      return robots.map((r) => r._id).sort();
    },

    /** Applies the downstream data of the run's /sync answer: catalogue, static-image records, perfect states. */
    async applyDownstream({ runId }: { runId: string }): Promise<Record<string, ApplyResult>> {
      const answer = answerOf(runId);
      const out: Record<string, ApplyResult> = {};
      const sameRecord = (a: { updated_at: Date; data: unknown }, b: { updated_at: Date; data: unknown }) =>
        a.updated_at.getTime() === b.updated_at.getTime() && JSON.stringify(a.data) === JSON.stringify(b.data);
      for (const coll of ['actions', 'categories', 'skills'] as const) {
        const docs = answer[coll].map((c) => ({ _id: c.id, updated_at: new Date(c.updated_at), data: { ...c.data, image: c.image } }));
        out[coll] = await replaceSet(models.downstream[coll], {}, docs, sameRecord, t);
      }
      const now = new Date();
      const entries = answer.perfect_state.flatMap((r) =>
        r.entries.map((e) => ({ _id: `${r.robot_id}|${e.path}`, robot_id: r.robot_id, path: e.path, sha256: e.sha256, size: e.size, url: e.url, updated_at: now })),
      );
      // Each robot's previous perfect state is replaced by the one just received.
      const robots = answer.perfect_state.map((r) => r.robot_id);
      out.perfect_state = await replaceSet(
        models.PerfectStateEntry,
        { robot_id: { $in: robots } },
        entries,
        (a, b) => a.sha256 === b.sha256 && a.size === b.size && a.url === b.url,
        t,
      );
      // Robot sync skips its read of these entries while a robot's token is the one of its last sync.
      const ps = out.perfect_state;
      // A retry marks them whatever it wrote: the attempt before may have written the entries and failed before
      // marking every robot (this one then finds nothing to write).
      if (ps.inserted + ps.updated + ps.deleted > 0 || !firstAttempt()) await markPerfectStateChanged(models, robots);
      return out;
    },

    /** Computes the missing RFs and writes the batched plan into the run's work directory; returns counts. */
    async planMissingRfs({ runId }: { runId: string }): Promise<RfPlan> {
      const [perfect, inventory] = await Promise.all([
        models.PerfectStateEntry.find({}, { robot_id: 1, path: 1, sha256: 1, size: 1, url: 1 }, { maxTimeMS: t }).lean(),
        models.InventoryEntry.find({}, { robot_id: 1, path: 1, sha256: 1 }, { maxTimeMS: t }).lean(),
      ]);
      const { missing, satisfied } = missingRfs(perfect, inventory, cachedRfs(dirs));
      // Small RFs first: most files are ready early, and a large one does not hold the small ones back.
      const batches = batchPlan(missing.sort((a, b) => a.size - b.size || a.sha256.localeCompare(b.sha256)));
      writeJson(path.join(runDir(dirs, runId), 'rf-plan.json'), batches);
      return { missing: missing.length, bytes: missing.reduce((n, r) => n + r.size, 0), batches: batches.length, satisfied };
    },

    /** The run succeeded: upstream records up to `cursor` are on the cloud; remember the outcome for the UI. */
    async recordSyncCursor({ cursor, summary }: { cursor: string | null; summary: Record<string, unknown> }): Promise<void> {
      await models.SyncState.updateOne(
        { _id: 'cloud' },
        { $set: { ...(cursor ? { cursor: new Date(cursor) } : {}), last_sync_at: new Date(), last_result: summary } },
        { upsert: true },
      );
    },
  };
}

export type CloudSyncDbActivities = ReturnType<typeof createCloudSyncDbActivities>;
