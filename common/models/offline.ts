// The offline app's database (a center's computer): the robots it knows, each robot's perfect state and
// inventory, the downstream data pulled from the cloud, the upstream data (sessions, children) with change
// tracking, and the cloud-sync cursor. Shared with robot sync (CONTRACT-OFFLINE.md): names are binding.
import crypto from 'node:crypto';
import { Schema, type Connection, type InferSchemaType, type Model } from 'mongoose';
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
  InventoryEntry: Model<InventoryEntry>;
  StaticImage: Model<StaticImage>;
  SyncState: Model<SyncState>;
  downstream: Record<DownstreamCollection, Model<SyncRecord>>;
  upstream: Record<UpstreamCollection, Model<SyncRecord>>;
}

/**
 * Records that the perfect state of `robotIds` changed: call it after writing their perfect_state_entries.
 * Robot sync compares this token with the one of its last complete sync, so an unchanged robot costs one small
 * document read instead of a scan of the entries (FerretDB scans a whole collection for every filter).
 */
export async function markPerfectStateChanged(models: Pick<OfflineModels, 'Robot'>, robotIds: readonly string[]): Promise<void> {
  // One update per robot by _id (the one filter FerretDB answers without a scan); each gets its own token.
  for (const id of new Set(robotIds)) await models.Robot.updateOne({ _id: id }, { $set: { perfect_state_rev: crypto.randomUUID() } });
}

export function registerOfflineModels(conn: Connection, timeoutMs: number): OfflineModels {
  const records = {
    actions: recordSchema(),
    categories: recordSchema(),
    skills: recordSchema(),
    sessions: recordSchema().index({ updated_at: 1 }),
    children: recordSchema().index({ updated_at: 1 }),
  };
  withQueryTimeout([robotSchema, perfectStateEntrySchema, inventoryEntrySchema, staticImageSchema, syncStateSchema, ...Object.values(records)], timeoutMs);
  return {
    Robot: conn.model<OfflineRobot>('OfflineRobot', robotSchema),
    PerfectStateEntry: conn.model<PerfectStateEntry>('PerfectStateEntry', perfectStateEntrySchema),
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
