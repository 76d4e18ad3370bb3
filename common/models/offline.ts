// The offline app's database (a center's computer): the robots it knows, each robot's perfect state and
// inventory, the downstream data pulled from the cloud, the upstream data (sessions, children) with change
// tracking, and the cloud-sync cursor. Shared with robot sync (CONTRACT-OFFLINE.md): names are binding.
import crypto from 'node:crypto';
import { Schema, type Connection, type InferSchemaType, type Model } from 'mongoose';
import { chunks, forEachLimited } from '../limit';
import { withQueryTimeout } from './query-timeout';

const robotSchema = new Schema(
  {
    _id: { type: String, required: true }, // robot id
    host: { type: String, required: true },
    port: { type: Number, required: true },
    username: { type: String, required: true },
    /** `env:<VARNAME>` (password in that variable) or `key:<private key file>`: a reference, never the secret. */
    credential_ref: { type: String, required: true },
    /** OpenSSH `SHA256:...` of the robot's host key; null until pinned on first contact. */
    host_key_sha256: { type: String, default: null },
    connected: { type: Boolean, default: false },
    /** Absolute directory on the robot under which its RFs live. */
    rf_root: { type: String, required: true },
    last_inventory_at: { type: Date, default: null },
    last_sync: { type: Schema.Types.Mixed, default: null },
    /**
     * Changes (a fresh random token) whenever this robot's perfect_state_entries are written: every writer calls
     * markPerfectStateChanged after its writes. Null: never marked, so readers cannot tell and read the entries.
     */
    perfect_state_rev: { type: String, default: null },
    /** How many perfect_state_parts hold the perfect state of `perfect_state_rev`; null: none, read the entries. */
    perfect_state_parts: { type: Number, default: null },
    /** Robot sync's record of its last complete sync (activities/ssh/robot-sync.ts RobotSyncState), or null. */
    robot_sync_state: { type: Schema.Types.Mixed, default: null },
  },
  { collection: 'robots', versionKey: false, minimize: false },
);

const perfectStateEntrySchema = new Schema(
  {
    _id: { type: String, required: true }, // `${robot_id}|${path}`
    robot_id: { type: String, required: true },
    path: { type: String, required: true },
    sha256: { type: String, required: true },
    size: { type: Number, required: true },
    url: { type: String, required: true },
    updated_at: { type: Date, required: true },
  },
  { collection: 'perfect_state_entries', versionKey: false },
);
perfectStateEntrySchema.index({ robot_id: 1 });

/**
 * A robot's perfect state as robot sync reads it: PERFECT_STATE_PART entries per document, as one JSON string of
 * `[path, sha256, size]` rows. FerretDB's cost is per document and per field: 5,000 entries took ~220 ms to read
 * as documents and ~25 ms as 5 of these (bench/robot-sync.ts reads one robot's whole state on every sync that is
 * not a no-op). Written by markPerfectStateChanged under a fresh rev; the entries stay the source of truth.
 */
const perfectStatePartSchema = new Schema(
  {
    _id: { type: String, required: true }, // `${robot_id}:${rev}:${n}`
    robot_id: { type: String, required: true },
    rev: { type: String, required: true },
    entries: { type: String, required: true },
    /** When its writer inserted it: an orphan (its writer died before naming it) is swept once it is old. */
    written_at: { type: Date },
  },
  { collection: 'perfect_state_parts', versionKey: false },
);
perfectStatePartSchema.index({ robot_id: 1 });
export const PERFECT_STATE_PART = 1000;
/**
 * Parts no token names and older than this are orphans: their writer died between its parts and its token (a
 * mark takes well under a second). A writer slower than this only loses its parts: readers then read entries.
 */
export const ORPHAN_PART_AGE_MS = 10 * 60_000;
const partId = (robotId: string, rev: string, n: number) => `${robotId}:${rev}:${n}`;

const inventoryEntrySchema = new Schema(
  {
    _id: { type: String, required: true }, // `${robot_id}|${path}`
    robot_id: { type: String, required: true },
    path: { type: String, required: true },
    size: { type: Number, required: true },
    mtime: { type: Date, required: true },
    sha256: { type: String, required: true },
    seen_at: { type: Date, required: true },
  },
  { collection: 'inventory_entries', versionKey: false },
);
inventoryEntrySchema.index({ robot_id: 1 });

/**
 * Synchronised records: downstream (actions, categories, skills: the cloud's document as sent) and upstream
 * (sessions, children: written by the app, sent to the cloud when changed after the cursor). Keyed by their id.
 */
const recordSchema = () =>
  new Schema(
    {
      _id: { type: String, required: true },
      updated_at: { type: Date, required: true },
      data: { type: Schema.Types.Mixed, required: true },
    },
    { versionKey: false, minimize: false },
  );

const staticImageSchema = new Schema(
  {
    _id: { type: String, required: true }, // image name (the cloud's key)
    sha256: { type: String, required: true },
    size: { type: Number, required: true },
    url: { type: String, required: true },
    /** Set once the verified file is in the local image directory. */
    stored_at: { type: Date, default: null },
  },
  { collection: 'static_images', versionKey: false },
);

const syncStateSchema = new Schema(
  {
    _id: { type: String, required: true }, // 'cloud'
    /** Upstream records changed after this instant are sent by the next sync. */
    cursor: { type: Date, default: null },
    last_sync_at: { type: Date, default: null },
    last_result: { type: Schema.Types.Mixed, default: null },
  },
  { collection: 'sync_state', versionKey: false, minimize: false },
);

export type OfflineRobot = InferSchemaType<typeof robotSchema>;
export type PerfectStateEntry = InferSchemaType<typeof perfectStateEntrySchema>;
export type InventoryEntry = InferSchemaType<typeof inventoryEntrySchema>;
export type PerfectStatePart = InferSchemaType<typeof perfectStatePartSchema>;
/** What robot sync needs of a perfect state entry. */
export type WantedRf = Pick<PerfectStateEntry, 'path' | 'sha256' | 'size'>;
export type SyncRecord = InferSchemaType<ReturnType<typeof recordSchema>>;
export type StaticImage = InferSchemaType<typeof staticImageSchema>;
export type SyncState = InferSchemaType<typeof syncStateSchema>;

export const DOWNSTREAM_COLLECTIONS = ['actions', 'categories', 'skills'] as const;
export type DownstreamCollection = (typeof DOWNSTREAM_COLLECTIONS)[number];
export const UPSTREAM_COLLECTIONS = ['sessions', 'children'] as const;
export type UpstreamCollection = (typeof UPSTREAM_COLLECTIONS)[number];

export interface OfflineModels {
  Robot: Model<OfflineRobot>;
  PerfectStateEntry: Model<PerfectStateEntry>;
  PerfectStatePart: Model<PerfectStatePart>;
  InventoryEntry: Model<InventoryEntry>;
  StaticImage: Model<StaticImage>;
  SyncState: Model<SyncState>;
  downstream: Record<DownstreamCollection, Model<SyncRecord>>;
  upstream: Record<UpstreamCollection, Model<SyncRecord>>;
}

/**
 * Records that the perfect state of `robotIds` changed: call it after writing their perfect_state_entries.
 * Robot sync compares this token with the one of its last complete sync, so an unchanged robot costs one small
 * document read instead of a scan of the entries (FerretDB scans a whole collection for every filter). The
 * robot's entries are also stored as perfect_state_parts under the new token, written before the token so a
 * reader that sees it finds them. The entries are read after the robot's current token and the new token is set
 * only if that one is still current: two writers marking at once never leave a token on parts older than the
 * entries (the one that lost reads the entries again). No transactions on FerretDB: this is the ordering instead.
 */
export async function markPerfectStateChanged(
  models: Pick<OfflineModels, 'Robot' | 'PerfectStateEntry' | 'PerfectStatePart'>,
  robotIds: readonly string[],
): Promise<void> {
  // One robot at a time, by _id (the one filter FerretDB answers without a scan); each gets its own token.
  for (const id of new Set(robotIds)) {
    for (let attempt = 1; ; attempt++) {
      const current = await models.Robot.findById(id, { perfect_state_rev: 1 }).lean<Pick<OfflineRobot, 'perfect_state_rev'>>();
      if (!current) break; // not a robot of this center: nothing reads its parts
      const rev = crypto.randomUUID();
      // Past a few lost races, the token alone: readers then read the entries.
      const entries = attempt <= 3 ? await models.PerfectStateEntry.find({ robot_id: id }, { path: 1, sha256: 1, size: 1 }).lean<WantedRf[]>() : null;
      const parts: PerfectStatePart[] = chunks(entries ?? [], PERFECT_STATE_PART).map((slice, n) => ({
        _id: partId(id, rev, n),
        robot_id: id,
        rev,
        entries: JSON.stringify(slice.map((e) => [e.path, e.sha256, e.size])),
        written_at: new Date(),
      }));
      // A few large documents: a handful per insert command.
      for (const batch of chunks(parts, 8)) await models.PerfectStatePart.insertMany(batch);
      const set = await models.Robot.updateOne(
        { _id: id, perfect_state_rev: current.perfect_state_rev },
        { $set: { perfect_state_rev: rev, perfect_state_parts: entries ? parts.length : null } },
      );
      if (set.matchedCount === 1) {
        // The replaced token's parts, and orphans: parts no token names, left by a call that failed between its
        // parts and its token. Not a concurrent writer's recent ones: they are in flight.
        const orphan = { rev: { $ne: rev }, $or: [{ written_at: { $lt: new Date(Date.now() - ORPHAN_PART_AGE_MS) } }, { written_at: { $exists: false } }] };
        await models.PerfectStatePart.deleteMany({
          robot_id: id,
          $or: [...(current.perfect_state_rev ? [{ rev: current.perfect_state_rev }] : []), orphan],
        });
        break;
      }
      await models.PerfectStatePart.deleteMany({ _id: { $in: parts.map((p) => p._id) } });
      if (attempt >= 10) throw new Error(`the perfect state of robot ${id} was marked by others 10 times while this call marked it`);
    }
  }
}

/**
 * A robot's perfect state: its parts when it has them for the token read with it, else its entries (written
 * before the token, so never older than it). A part missing means a newer token replaced them meanwhile.
 */
export async function readPerfectState(
  models: Pick<OfflineModels, 'PerfectStateEntry' | 'PerfectStatePart'>,
  robot: Pick<OfflineRobot, '_id' | 'perfect_state_rev' | 'perfect_state_parts'>,
): Promise<WantedRf[]> {
  const { _id: id, perfect_state_rev: rev, perfect_state_parts: count } = robot;
  if (rev && typeof count === 'number') {
    // Each by its id (no scan), 8 at a time.
    const parts: Array<string | null> = new Array<string | null>(count).fill(null);
    await forEachLimited([...parts.keys()], 8, async (n) => {
      parts[n] = (await models.PerfectStatePart.findById(partId(id, rev, n), { entries: 1 }).lean<Pick<PerfectStatePart, 'entries'>>())?.entries ?? null;
    });
    if (parts.every((p) => p !== null)) {
      return parts.flatMap((p) => (JSON.parse(p!) as Array<[string, string, number]>).map(([path, sha256, size]) => ({ path, sha256, size })));
    }
  }
  return models.PerfectStateEntry.find({ robot_id: id }, { path: 1, sha256: 1, size: 1 }).lean<WantedRf[]>();
}

export function registerOfflineModels(conn: Connection, timeoutMs: number): OfflineModels {
  const records = {
    actions: recordSchema(),
    categories: recordSchema(),
    skills: recordSchema(),
    sessions: recordSchema().index({ updated_at: 1 }),
    children: recordSchema().index({ updated_at: 1 }),
  };
  withQueryTimeout([robotSchema, perfectStateEntrySchema, perfectStatePartSchema, inventoryEntrySchema, staticImageSchema, syncStateSchema, ...Object.values(records)], timeoutMs);
  return {
    Robot: conn.model<OfflineRobot>('OfflineRobot', robotSchema),
    PerfectStateEntry: conn.model<PerfectStateEntry>('PerfectStateEntry', perfectStateEntrySchema),
    PerfectStatePart: conn.model<PerfectStatePart>('PerfectStatePart', perfectStatePartSchema),
    InventoryEntry: conn.model<InventoryEntry>('InventoryEntry', inventoryEntrySchema),
    StaticImage: conn.model<StaticImage>('StaticImage', staticImageSchema),
    SyncState: conn.model<SyncState>('SyncState', syncStateSchema),
    downstream: {
      actions: conn.model<SyncRecord>('OfflineAction', records.actions, 'actions'),
      categories: conn.model<SyncRecord>('OfflineCategory', records.categories, 'categories'),
      skills: conn.model<SyncRecord>('OfflineSkill', records.skills, 'skills'),
    },
    upstream: {
      sessions: conn.model<SyncRecord>('OfflineSession', records.sessions, 'sessions'),
      children: conn.model<SyncRecord>('OfflineChild', records.children, 'children'),
    },
  };
}
