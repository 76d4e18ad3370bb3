// Inventory of a robot's RFs (the seed's traverse_remote_dir), incremental: one remote command streams the
// listing (path, size, mtime) of everything under the robot's rf_root; only files that are new or whose size or
// mtime changed since the stored inventory are hashed, by a second command that streams their sha256s. Two round
// trips per robot whatever the number of files. Only the differences are written to `inventory_entries` (bulk,
// chunks of <= 50) and only counts go back to the workflow. Cloud sync's first-sync step and robot sync both use
// it (CONTRACT-OFFLINE.md).
import crypto from 'node:crypto';
import type { Client } from 'ssh2';
import type { Config } from '../../common/config';
import { chunks, INSERT_CHUNK } from '../../common/db';
import type { InventoryEntry, OfflineModels } from '../../common/models/offline';
import { exec, shq } from './connect';
import { keepAlive, withRobot } from './robot-session';

export interface InventoryResult {
  files: number;
  bytes: number;
  /** Files hashed this time (new or changed since the last inventory). */
  hashed: number;
  /** Entries dropped: files no longer on the robot. */
  removed: number;
}

export interface RemoteStat {
  path: string;
  size: number;
  mtime: Date;
  /** The listing's record as the robot printed it (what listingDigest hashes). */
  record: string;
}

export interface RemoteFile extends RemoteStat {
  sha256: string;
}

/** `size<TAB>mtime<TAB>path` records, NUL-terminated (any byte but NUL may be in a path). `.part` files are
 * uploads in progress, never RFs. A missing root is an empty inventory. */
// -ignore_readdir_race: a file renamed or removed while find walks (an OTA deploy's part) is not an error.
const findRecords = (root: string, nameTests: string): string =>
  `find ${shq(root)} -ignore_readdir_race -type f ${nameTests} -printf '%s\\t%T@\\t%p\\0'`;
const findFiles = (root: string): string => findRecords(root, `! -name '*.part' ! -name '*.part.json'`);
/** `command` when `root` is a directory; otherwise nothing listed, no error. */
const inRoot = (root: string, command: string): string => `[ -d ${shq(root)} ] || exit 0; ${command}`;
export const listingCommand = (root: string): string => inRoot(root, findFiles(root));

/** Hashes the NUL-separated paths given on stdin; a file gone meanwhile is skipped (not an error). */
export const HASH_COMMAND = `xargs -0 -r sha256sum -z 2>/dev/null; exit 0`;

/** Runs a command, feeds `stdin`, and hands every NUL-terminated record of its output to `onRecord`. */
export function streamRecords(client: Client, command: string, onRecord: (rec: string) => void, stdin = ''): Promise<void> {
  return new Promise((resolve, reject) => {
    client.exec(command, (err, stream) => {
      if (err) return reject(err);
      let rest: Buffer = Buffer.alloc(0);
      let stderr = '';
      stream.on('data', (d: Buffer) => {
        rest = rest.length ? Buffer.concat([rest, d]) : d;
        let at: number;
        while ((at = rest.indexOf(0)) >= 0) {
          onRecord(rest.subarray(0, at).toString('utf8'));
          rest = rest.subarray(at + 1);
        }
      });
      stream.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      stream.on('close', (code: number | null) =>
        code === 0 ? resolve() : reject(new Error(`remote command failed (exit ${code}): ${stderr.trim().slice(0, 500)}`)),
      );
      stream.end(stdin);
    });
  });
}

const parseRecord = (rec: string): RemoteStat => {
  const [size, mtime, ...p] = rec.split('\t');
  return { path: p.join('\t'), size: Number(size), mtime: new Date(Number(mtime) * 1000), record: rec };
};

/** The robot's listing; `onStat` sees each file as its record arrives (work can start before the listing ends). */
export async function listRemote(client: Client, root: string, onStat?: (f: RemoteStat) => void): Promise<RemoteStat[]> {
  const out: RemoteStat[] = [];
  await streamRecords(client, listingCommand(root), (rec) => {
    const f = parseRecord(rec);
    out.push(f);
    onStat?.(f);
  });
  return out;
}

/**
 * Robot sync's parts under `root` (files ending in `suffix`), by the target path each is renamed onto. A part
 * written and closed has the size and mtime its target will have: a rename keeps both.
 */
export async function listParts(client: Client, root: string, suffix: string): Promise<Map<string, RemoteStat>> {
  const out = new Map<string, RemoteStat>();
  await streamRecords(client, inRoot(root, findRecords(root, `-name ${shq(`*${suffix}`)}`)), (rec) => {
    const f = parseRecord(rec);
    const target = f.path.slice(0, -suffix.length);
    out.set(target, { ...f, path: target, record: rec.slice(0, -suffix.length) }); // the record its target will have
  });
  return out;
}

/**
 * The digest of a robot's listing computed on the robot: its records hashed in the order find prints them, so
 * only 64 hex characters travel. Equal digests mean the robot holds the same files with the same sizes and
 * mtimes — the test the inventory itself uses to hash only what changed. (find's order is the directories'
 * own, stable while they do not change; a change of order alone only costs one full sync.)
 */
export const listingDigestCommand = (root: string): string =>
  `[ -d ${shq(root)} ] || { printf '' | sha256sum; exit 0; }; ${findFiles(root)} | sha256sum`;

/** The same digest from a listing already here (its records as the robot printed them, in that order). */
export function listingDigest(listing: readonly RemoteStat[]): string {
  const h = crypto.createHash('sha256');
  for (const f of listing) h.update(`${f.record}\0`);
  return h.digest('hex');
}

export async function remoteListingDigest(client: Client, root: string): Promise<string> {
  const r = await exec(client, listingDigestCommand(root));
  const digest = /^[0-9a-f]{64}/.exec(r.stdout)?.[0];
  if (r.code !== 0 || !digest) throw new Error(`listing digest on the robot failed (exit ${r.code}): ${r.stderr.trim().slice(0, 500)}`);
  return digest;
}

export async function hashRemote(client: Client, paths: string[]): Promise<Map<string, string>> {
  const sums = new Map<string, string>();
  if (paths.length === 0) return sums;
  await streamRecords(
    client,
    HASH_COMMAND,
    (rec) => {
      const sep = rec.indexOf('  ');
      if (sep > 0) sums.set(rec.slice(sep + 2), rec.slice(0, sep));
    },
    paths.join('\0') + '\0',
  );
  return sums;
}

const INSERTS_IN_FLIGHT = 4;

const entryId = (robotId: string, p: string) => `${robotId}|${p}`;

export interface InventoryWriter {
  /** One fresh entry: written in the background, in bulk. */
  add(f: RemoteFile): void;
  /** Writes what is buffered and waits for every write; throws the first write's error. */
  close(): Promise<void>;
}

/**
 * Writes inventory entries as they come (a listing streaming in): new ids are plain inserts (FerretDB scans the
 * collection for every filtered write; inserts have no filter), INSERT_CHUNK per statement and a few statements
 * in flight; entries of `known` paths are replaced 50 per bulk write, one write at a time.
 */
export function inventoryWriter(models: Pick<OfflineModels, 'InventoryEntry'>, robotId: string, known: ReadonlySet<string>): InventoryWriter {
  const seenAt = new Date();
  const doc = (f: RemoteFile) => ({ _id: entryId(robotId, f.path), robot_id: robotId, path: f.path, size: f.size, mtime: f.mtime, sha256: f.sha256, seen_at: seenAt });
  let inserts: RemoteFile[] = [];
  let replaces: RemoteFile[] = [];
  const queue: RemoteFile[][] = [];
  let active = 0;
  let failure: { error: unknown } | null = null;
  let drained: (() => void) | null = null;
  let replacing: Promise<void> = Promise.resolve();
  let closed = false;
  // Through the driver: the documents are built here already, mongoose's per-document casting is pure cost.
  const pump = () => {
    while (active < INSERTS_IN_FLIGHT && queue.length > 0) {
      const part = queue.shift()!;
      active++;
      models.InventoryEntry.collection
        .insertMany(part.map(doc) as never[], { ordered: false })
        .catch((error: unknown) => void (failure ??= { error }))
        .finally(() => {
          active--;
          pump();
          if (active === 0 && queue.length === 0) drained?.();
        });
    }
  };
  const flushInserts = () => {
    if (inserts.length === 0) return;
    queue.push(inserts);
    inserts = [];
    pump();
  };
  const flushReplaces = () => {
    if (replaces.length === 0) return;
    const part = replaces;
    replaces = [];
    replacing = replacing.then(async () => {
      if (failure) return;
      await models.InventoryEntry.bulkWrite(
        part.map((f) => ({ replaceOne: { filter: { _id: entryId(robotId, f.path) }, replacement: doc(f), upsert: true } })),
        { ordered: false },
      ).catch((error: unknown) => void (failure ??= { error }));
    });
  };
  return {
    add(f) {
      // After close (the upload failed and its other sessions still rename): nothing may start behind a retry.
      if (closed) return;
      if (known.has(f.path)) {
        replaces.push(f);
        if (replaces.length >= 50) flushReplaces();
      } else {
        inserts.push(f);
        if (inserts.length >= INSERT_CHUNK) flushInserts();
      }
    },
    async close() {
      if (closed) return;
      closed = true;
      flushInserts();
      flushReplaces();
      if (active > 0 || queue.length > 0) await new Promise<void>((r) => (drained = r));
      await replacing;
      if (failure) throw failure.error;
    },
  };
}

/**
 * Writes inventory changes: `gone` ids deleted, then `fresh` entries (new ids inserted, known ones replaced).
 */
export async function writeInventory(
  models: Pick<OfflineModels, 'InventoryEntry'>,
  robotId: string,
  fresh: RemoteFile[],
  known: Set<string>,
  gone: string[] = [],
): Promise<void> {
  for (const part of chunks(gone)) await models.InventoryEntry.deleteMany({ _id: { $in: part.map((p) => entryId(robotId, p)) } });
  const writer = inventoryWriter(models, robotId, known);
  for (const f of fresh) writer.add(f);
  await writer.close();
}

/** The stored inventory of a robot, by path. */
export async function storedInventory(models: Pick<OfflineModels, 'InventoryEntry'>, robotId: string): Promise<Map<string, InventoryEntry>> {
  const rows = await models.InventoryEntry.find({ robot_id: robotId }, { path: 1, size: 1, mtime: 1, sha256: 1 }).lean<InventoryEntry[]>();
  return new Map(rows.map((r) => [r.path, r]));
}

/** What a robot holds after an inventory, by path (what robot sync plans its upload from). */
export type Holdings = Map<string, Pick<InventoryEntry, 'size' | 'mtime' | 'sha256'>>;

/**
 * The inventory from a fresh listing and the stored inventory: hashes (one remote command) only the files that
 * are new or whose size or mtime changed, writes only the differences, and returns what the robot holds (what
 * robot sync plans its upload from, without reading the stored inventory again).
 */
export async function inventoryFromListing(
  models: Pick<OfflineModels, 'InventoryEntry' | 'Robot'>,
  robotId: string,
  client: Client,
  listing: RemoteStat[],
  stored: Map<string, InventoryEntry>,
): Promise<{ result: InventoryResult; holdings: Holdings; hashMs: number }> {
  const changed = new Set<RemoteStat>();
  for (const f of listing) {
    const s = stored.get(f.path);
    if (!s || s.size !== f.size || new Date(s.mtime).getTime() !== f.mtime.getTime()) changed.add(f);
  }
  const t0 = Date.now();
  const sums = await hashRemote(client, [...changed].map((f) => f.path));
  const hashMs = Date.now() - t0;
  const fresh: RemoteFile[] = [...changed].filter((f) => sums.has(f.path)).map((f) => ({ ...f, sha256: sums.get(f.path)! }));
  // Gone: not listed any more, or changed and vanished before it was hashed.
  const present = new Set(listing.filter((f) => !changed.has(f) || sums.has(f.path)).map((f) => f.path));
  const gone = [...stored.keys()].filter((p) => !present.has(p));
  await writeInventory(models, robotId, fresh, new Set(stored.keys()), gone);
  const kept = listing.filter((f) => present.has(f.path));
  const holdings: Holdings = new Map();
  for (const f of kept) holdings.set(f.path, stored.get(f.path) ?? { size: f.size, mtime: f.mtime, sha256: '' });
  for (const f of fresh) holdings.set(f.path, f);
  return {
    result: { files: kept.length, bytes: kept.reduce((n, f) => n + f.size, 0), hashed: fresh.length, removed: gone.length },
    holdings,
    hashMs,
  };
}

/** The inventory with an open session: listing and stored inventory read together, then inventoryFromListing. */
export async function inventoryWithClient(
  models: Pick<OfflineModels, 'InventoryEntry' | 'Robot'>,
  robotId: string,
  root: string,
  client: Client,
): Promise<{ result: InventoryResult; holdings: Holdings }> {
  const [listing, stored] = await Promise.all([listRemote(client, root), storedInventory(models, robotId)]);
  const inv = await inventoryFromListing(models, robotId, client, listing, stored);
  await models.Robot.updateOne({ _id: robotId }, { $set: { last_inventory_at: new Date() } });
  return inv;
}

export function createRobotInventoryActivities(deps: { models: OfflineModels; cfg: Config }) {
  const { models } = deps;
  return {
    async inventoryRobot({ robotId }: { robotId: string }): Promise<InventoryResult> {
      const beat = keepAlive();
      try {
        return await withRobot(models, robotId, async (robot, client) => (await inventoryWithClient(models, robotId, robot.rf_root, client)).result);
      } finally {
        beat.stop();
      }
    },
  };
}

export type RobotInventoryActivities = ReturnType<typeof createRobotInventoryActivities>;
