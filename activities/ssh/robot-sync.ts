// Robot sync's activities (the seed's upload_files_to_remote + traverse_remote_dir): which robots to sync, and per
// robot one activity on one SSH session: the incremental inventory, then the upload of the RFs the robot lacks
// according to its perfect state (perfect state − fresh inventory), each sent from the content-addressed cache
// (RF_CACHE_DIR/<sha256>) by the SFTP engine; what it installs is recorded in the inventory. Only counts go back
// to the workflow (never a file list). Deletion is never done: RFs on the robot that the perfect state no
// longer lists are reported as unlisted.
import fs from 'node:fs';
import path from 'node:path';
import { Context, log } from '@temporalio/activity';
import type { Client, SFTPWrapper } from 'ssh2';
import type { Config } from '../../common/config';
import { readPerfectState, type OfflineModels, type OfflineRobot, type WantedRf } from '../../common/models/offline';
import { sftp, verifiedHostKey } from './connect';
import { opensshUnavailable, uploadLargeWithOpenssh } from './openssh-put';
import { inventoryFromListing, inventoryWriter, listingDigest, listParts, listRemote, remoteListingDigest, storedInventory, type Holdings, type InventoryResult, type RemoteStat } from './inventory';
import { keepAlive, loadRobot, offlineRobotTarget, robotFailure, withConnection, type Beat } from './robot-session';
import { ensureRemoteDirs, flushAfterAll, flushRemoteFs, uploadFiles, uploadPartPath, type ResumePoint, type UploadItem } from './sftp-upload';

export interface Counts {
  files: number;
  bytes: number;
}

/** Live progress of one robot, held by the robotSync workflow (signalled by the upload, read by a query). */
export interface RobotProgress {
  robotId: string;
  files: { done: number; total: number };
  bytes: { done: number; total: number };
}

/** Delivers a progress update to the robotSync workflow `workflowId` (a Temporal signal in the worker). */
export type ProgressSink = (workflowId: string, progress: RobotProgress) => Promise<void>;

export interface SyncRobotInput {
  robotId: string;
  /** The robotSync workflow: it holds the progress, and the robot's `last_sync` names it (none: no reports). */
  progressTo?: string;
  /** Tests only: slows the upload so a worker can be killed in the middle of it. */
  throttleBytesPerSec?: number;
}

export interface RobotUploadResult {
  /** RFs the robot lacked (or held with another content) when this attempt planned. */
  planned: Counts;
  /** RFs installed at their path by this attempt. */
  uploaded: Counts;
  /** Bytes this attempt sent over the wire (a resumed RF counts only its remaining bytes). */
  sentBytes: number;
  /** Offset a resumed large RF continued from (0: nothing resumed). */
  resumedFromBytes: number;
  /** RFs already on the robot with the right content. */
  skipped: Counts;
  failed: Counts & { errors: Array<{ path: string; error: string }> };
  /** RFs under the robot's rf_root that its perfect state does not list: reported, never deleted. */
  unlisted: { files: number; bytes: number; sample: string[] };
}

export interface SyncRobotResult {
  inventory: InventoryResult;
  upload: RobotUploadResult;
  /**
   * Nothing changed since the last complete sync (same perfect-state token, same listing): neither the perfect
   * state nor the stored inventory was read, nothing was hashed or sent.
   */
  unchanged: boolean;
  /** Milliseconds per step: SSH connect, listing, entry reads, hashing (with the inventory's own writes), upload
   * (of which the robot's flush), the listing after the upload, the installed RFs' inventory write, and the
   * robot's record. */
  ms: { connect: number; list: number; read: number; hash: number; upload: number; flush: number; relist: number; inventory: number; record: number };
  /** The robot's `last_sync` is written (the workflow need not record it). */
  recorded: boolean;
}

/**
 * Robot sync's record of its last complete sync, on the robot's document (`robot_sync_state`): the perfect-state
 * token it synced against and the digest of the robot's listing after it. While both are unchanged the next run
 * has nothing to do and says so from this small document (FerretDB scans a whole collection per filter: the
 * entries are read only when something may have changed).
 */
export interface RobotSyncState {
  perfect_state_rev: string;
  rf_root: string;
  /** The robot's listing after that sync: listingDigest (computed on the robot by remoteListingDigest). */
  listing_sha256: string;
  /** RFs under rf_root then. */
  files: Counts;
  skipped: Counts;
  unlisted: RobotUploadResult['unlisted'];
}

export interface RobotsToSync {
  connected: string[];
  notConnected: string[];
  unknown: string[];
}

const SAMPLE = 20;
/** From this size an RF is sent alone with every write slot, fsynced on its own and resumable mid-file. */
const LARGE_RF = 2 * 1024 * 1024;
const PROGRESS_EVERY_MS = 1000;
/**
 * SFTP sessions small RFs are spread over (one per 500 files, at most this many). Each is an sftp-server on the
 * robot that answers its requests one after the other: 5,000 files of 8 KiB were written in ~20% less time and
 * client CPU over 7-8 sessions than over 3 (measured on a shared 2-core box). 7 leaves room under sshd's
 * default MaxSessions of 10 for the large-RF flush session and the exec channels (mkdir, sync) open meanwhile.
 */
const SMALL_FILE_SESSIONS = 7;

const DOTDOT_SEGMENT = /(^|\/)\.\.(\/|$)/;

/** Inside the robot's rf_root, absolute, no `..`: the perfect state cannot make us write elsewhere. */
export function insideRoot(root: string, p: string): boolean {
  if (!path.posix.isAbsolute(p) || DOTDOT_SEGMENT.test(p)) return false;
  // With no `..` segment, normalizing only folds `//`, `/./` and a trailing `/`: a string prefix test is exact.
  const r = path.posix.normalize(root);
  const prefix = r.endsWith('/') ? r : `${r}/`;
  const n = path.posix.normalize(p);
  return n.startsWith(prefix) && n.length > prefix.length;
}

interface Plan {
  items: UploadItem[];
  skipped: Counts;
  failed: RobotUploadResult['failed'];
  unlisted: RobotUploadResult['unlisted'];
  known: Holdings;
}

/** Perfect state − holdings: what to send, what is there already, what cannot be sent, what is not listed. */
function plan(cfg: Config, robot: OfflineRobot, wanted: WantedRf[], known: Holdings): Plan {
  const out: Plan = {
    items: [],
    skipped: { files: 0, bytes: 0 },
    failed: { files: 0, bytes: 0, errors: [] },
    unlisted: { files: 0, bytes: 0, sample: [] },
    known,
  };
  const fail = (p: string, size: number, error: string) => {
    out.failed.files++;
    out.failed.bytes += size;
    if (out.failed.errors.length < SAMPLE) out.failed.errors.push({ path: p, error });
  };
  const listed = new Set<string>();
  for (const w of wanted.sort((a, b) => a.path.localeCompare(b.path))) {
    listed.add(w.path);
    const have = known.get(w.path);
    if (have && have.sha256 === w.sha256 && have.size === w.size) {
      out.skipped.files++;
      out.skipped.bytes += w.size;
      continue;
    }
    if (!insideRoot(robot.rf_root, w.path)) {
      fail(w.path, w.size, `outside the robot's rf_root ${robot.rf_root}`);
      continue;
    }
    if (!/^[0-9a-f]{64}$/.test(w.sha256)) {
      fail(w.path, w.size, 'perfect state entry has no valid sha256');
      continue;
    }
    const localPath = path.join(cfg.offline.rfCacheDir, w.sha256);
    const st = fs.statSync(localPath, { throwIfNoEntry: false });
    if (!st || st.size !== w.size) {
      fail(w.path, w.size, 'not in the RF cache (run cloud sync first)');
      continue;
    }
    out.items.push({ localPath, remotePath: w.path, size: w.size, sha256: w.sha256 });
  }
  for (const [p, e] of known) {
    if (listed.has(p)) continue;
    out.unlisted.files++;
    out.unlisted.bytes += e.size;
    if (out.unlisted.sample.length < SAMPLE) out.unlisted.sample.push(p);
  }
  return out;
}

const emptyResult = (p: Plan): RobotUploadResult => ({
  planned: { files: p.items.length, bytes: p.items.reduce((n, i) => n + i.size, 0) },
  uploaded: { files: 0, bytes: 0 },
  sentBytes: 0,
  resumedFromBytes: 0,
  skipped: p.skipped,
  failed: p.failed,
  unlisted: p.unlisted,
});

function heartbeatDetails(): ResumePoint | null {
  const d = Context.current().info.heartbeatDetails as { resume?: ResumePoint | null } | undefined;
  return d?.resume ?? null;
}

let unavailableLogged = false;

/**
 * The RFs that go through OpenSSH's ssh client (into dd on the robot) (ROBOT_SYNC_OPENSSH): those at least `fromBytes` large, when the
 * client and setpriv are installed and the session verified a host key blob; otherwise none (reason logged once).
 */
function opensshItems(cfg: Config, client: Client, items: UploadItem[]): UploadItem[] {
  const { enabled, fromBytes } = cfg.offline.robotSyncOpenssh;
  const large = enabled ? items.filter((i) => i.size >= fromBytes) : [];
  if (large.length === 0) return [];
  const why = opensshUnavailable() ?? (verifiedHostKey(client) ? null : 'the SSH session holds no verified host key');
  if (!why) return large;
  if (!unavailableLogged) log.warn('OpenSSH bulk transport unavailable, large RFs go over ssh2', { reason: why });
  unavailableLogged = true;
  return [];
}

/** SFTP sessions for this many small RFs: one per 500, at least one, at most SMALL_FILE_SESSIONS. */
const smallFileSessions = (files: number) => Math.max(1, Math.min(SMALL_FILE_SESSIONS, Math.ceil(files / 500)));

/** SFTP sessions opened, and parent directories made (for these remote paths), before the plan was known. */
interface PreparedUpload {
  /** For upload(): from then on, ending the sessions is its business. */
  take(): Promise<{ sessions: SFTPWrapper[]; dirsFor: Set<string> }>;
  /** Ends the sessions unless upload() took them (idempotent; safe when preparing failed). */
  release(): void;
}

/**
 * Opens the upload's SFTP sessions (each starts an sftp-server on the robot) and makes the RFs' directories
 * while the robot lists its files: a sync whose perfect state lists RFs its last inventory did not hold will
 * upload. A failure here costs nothing: upload() opens and makes what is missing.
 */
function prepareUpload(client: Client, root: string, wanted: readonly WantedRf[], stored: ReadonlyMap<string, unknown>): PreparedUpload | null {
  // Only directories plan() would let an upload use: never one outside the robot's rf_root.
  const missing = wanted.filter((w) => !stored.has(w.path) && w.size < LARGE_RF && insideRoot(root, w.path)).map((w) => w.path);
  if (missing.length === 0) return null;
  let taken = false;
  const opening = Promise.allSettled(Array.from({ length: smallFileSessions(missing.length) }, () => sftp(client)));
  const sessions = opening.then((all) => all.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : [])));
  const dirsFor = ensureRemoteDirs(client, missing).then(() => new Set(missing), () => new Set<string>());
  return {
    async take() {
      taken = true;
      return { sessions: await sessions, dirsFor: await dirsFor };
    },
    release() {
      if (taken) return;
      taken = true;
      void sessions.then((all) => all.forEach((x) => x.end()));
    },
  };
}

async function upload(
  deps: { models: OfflineModels; cfg: Config; progress?: ProgressSink },
  input: SyncRobotInput,
  robot: OfflineRobot,
  client: Client,
  p: Plan,
  beat: Beat,
  /** An RF renamed into place, with its part's listing entry when the flush listed one. */
  onInstalled: (item: UploadItem, part: RemoteStat | undefined) => void,
  pre: PreparedUpload | null,
): Promise<Pick<RobotUploadResult, 'uploaded' | 'sentBytes' | 'resumedFromBytes'> & { failed: Array<{ path: string; error: string }>; installed: UploadItem[]; flushMs: number }> {
  const total = { files: p.items.length, bytes: p.items.reduce((n, i) => n + i.size, 0) };
  let last = 0;
  let pendingReport: Promise<void> = Promise.resolve();
  const report = (files: number, bytes: number, force = false) => {
    if (!input.progressTo || !deps.progress || (!force && Date.now() - last < PROGRESS_EVERY_MS)) return;
    last = Date.now();
    const to = input.progressTo;
    // One report in flight at a time; a lost report is only a late progress bar.
    pendingReport = pendingReport.then(() =>
      deps.progress!(to, { robotId: robot._id, files: { done: files, total: total.files }, bytes: { done: bytes, total: total.bytes } }).catch(() => undefined),
    );
  };
  report(0, 0, true);
  const bulk = opensshItems(deps.cfg, client, p.items);
  const viaSsh2 = p.items.filter((i) => !bulk.includes(i));
  // Small RFs are spread over a few SFTP sessions: each is its own sftp-server process on the robot, which
  // handles its requests one after the other (file creation is the robot's cost); large RFs go to the first.
  const small = viaSsh2.filter((i) => i.size < LARGE_RF);
  const groups: UploadItem[][] = Array.from({ length: smallFileSessions(small.length) }, () => []);
  small.forEach((item, n) => groups[n % groups.length].push(item));
  groups[0].push(...viaSsh2.filter((i) => i.size >= LARGE_RF));
  const hasLarge = viaSsh2.some((i) => i.size >= LARGE_RF);
  // Large RFs also get a session that flushes their parts to disk while the first keeps writing. Sessions and
  // directories prepared during the listing are used; what they lack is made now.
  const ready = pre ? await pre.take() : { sessions: [] as SFTPWrapper[], dirsFor: new Set<string>() };
  const spare = ready.sessions.splice(groups.length);
  for (const x of spare) x.end();
  const [more, flushSession] = await Promise.all([
    Promise.all(groups.slice(ready.sessions.length).map(() => sftp(client))),
    hasLarge ? sftp(client) : undefined,
    ensureRemoteDirs(client, p.items.map((i) => i.remotePath).filter((r) => !ready.dirsFor.has(r))),
  ]);
  const sessions = [...ready.sessions, ...more];
  const installed: UploadItem[] = [];
  let flushMs = 0;
  // Kept until a large RF reports its own point: small files sent first must not erase it. A stale point is
  // harmless: it is only used while its .part is still on the robot.
  const prior = heartbeatDetails();
  // One entry per SFTP group, the last for the OpenSSH transfers.
  const progress = [...groups, bulk].map(() => ({ files: 0, bytes: 0 }));
  let resume: ResumePoint | null = null;
  const onProgress = (g: number, pr: { files: number; bytes: number; resume: ResumePoint | null }, tracksResume: boolean) => {
    progress[g] = { files: pr.files, bytes: pr.bytes };
    if (tracksResume) resume = pr.resume;
    const files = progress.reduce((n, x) => n + x.files, 0);
    const bytes = progress.reduce((n, x) => n + x.bytes, 0);
    beat.set({ resume: resume ?? prior, files, bytes });
    report(files, bytes);
  };
  try {
    // Each group writes its parts, waits for the one flush of the robot's filesystem (syncfs: every part is on
    // disk once it returns) that starts when all groups are written, and only then renames its parts.
    // The flush also lists the parts it made durable (same moment: every part written and closed): their size
    // and mtime are their targets' once renamed, so each file's inventory entry is written as its rename is
    // answered, while the others are renamed, instead of after a listing at the end.
    let parts = new Map<string, RemoteStat>();
    const flushes = flushAfterAll(groups.length, async () => {
      const t0 = Date.now();
      // The listing is an optimisation: without it the entries come from the listing after the upload.
      [, parts] = await Promise.all([flushRemoteFs(client, robot.rf_root), listParts(client, robot.rf_root, uploadPartPath('')).catch(() => new Map<string, RemoteStat>())]);
      flushMs += Date.now() - t0;
    });
    const installedOne = (item: UploadItem) => {
      installed.push(item);
      // Only small RFs were written before the flush listed the parts: a large one's part is written after it
      // (a whole-size part listed then is an earlier attempt's, rewritten since).
      onInstalled(item, item.size < LARGE_RF ? parts.get(item.remotePath) : undefined);
    };
    const rs = await Promise.all(
      groups.map((items, g) =>
        uploadFiles(sessions[g], items, {
          resumableFrom: LARGE_RF,
          flushSession: g === 0 ? flushSession : undefined,
          resume: g === 0 ? prior : null,
          flush: flushes[g].flush,
          throttleBytesPerSec: input.throttleBytesPerSec,
          onFileDone: installedOne,
          onProgress: (pr) => onProgress(g, pr, g === 0),
        }).finally(flushes[g].leave),
      ),
    );
    // The large RFs for OpenSSH's ssh client, one at a time, after the others (the resumed one first).
    bulk.sort((a, b) => Number(b.remotePath === prior?.remotePath) - Number(a.remotePath === prior?.remotePath));
    const target = bulk.length ? offlineRobotTarget(robot) : null;
    const done = { files: 0, bytes: 0 };
    for (const item of bulk) {
      log.info('large RF through OpenSSH ssh', { robotId: robot._id, path: item.remotePath, bytes: item.size });
      const b = await uploadLargeWithOpenssh(sessions[0], item, {
        target: target!,
        hostKey: verifiedHostKey(client)!,
        resume: prior,
        streams: deps.cfg.offline.robotSyncOpenssh.streams,
        signal: Context.current().cancellationSignal,
        limitKbitPerSec: input.throttleBytesPerSec ? Math.max(1, Math.floor((input.throttleBytesPerSec * 8) / 1000)) : undefined,
        onProgress: (pr) => onProgress(groups.length, { files: done.files, bytes: done.bytes + pr.bytes, resume: pr.resume }, true),
      }).catch((e: unknown) => {
        // The child's own host key check or login failing is a robot-level failure, as at connect time.
        throw robotFailure(e);
      });
      if (b.resumedFrom > 0) log.info('large RF resumed', { robotId: robot._id, path: item.remotePath, resumedRanges: b.resumedRanges, sentBytes: b.bytesSent });
      done.files++;
      done.bytes += b.bytesSent;
      installed.push(item);
      onProgress(groups.length, { files: done.files, bytes: done.bytes, resume: null }, true);
      rs.push(b);
    }
    const r = {
      files: rs.reduce((n, x) => n + x.files, 0),
      bytesSent: rs.reduce((n, x) => n + x.bytesSent, 0),
      bytesInstalled: rs.reduce((n, x) => n + x.bytesInstalled, 0),
      resumedFrom: Math.max(...rs.map((x) => x.resumedFrom)),
      failed: rs.flatMap((x) => x.failed),
    };
    report(r.files, r.bytesSent, true);
    await pendingReport;
    return {
      uploaded: { files: r.files, bytes: r.bytesInstalled },
      sentBytes: r.bytesSent,
      resumedFromBytes: r.resumedFrom,
      failed: r.failed.map((f) => ({ path: f.remotePath, error: f.error })),
      installed,
      flushMs,
    };
  } finally {
    for (const x of sessions) x.end();
    flushSession?.end();
  }
}

const sumSizes = (files: readonly { size: number }[]) => files.reduce((n, f) => n + f.size, 0);

export function createRobotSyncActivities(deps: { models: OfflineModels; cfg: Config; progress?: ProgressSink }) {
  const { models, cfg } = deps;

  /** The robot's record after a sync, in one write: its last sync, inventory time and sync state. */
  async function recordRobot(input: SyncRobotInput, robot: OfflineRobot, upload: RobotUploadResult, state: RobotSyncState | null): Promise<void> {
    const at = new Date();
    const status = upload.failed.files > 0 ? 'partial' : 'synced';
    await models.Robot.updateOne(
      { _id: robot._id },
      {
        $set: {
          last_inventory_at: at,
          // The shape the workflow's recordRobotSync writes for the robots it could not sync.
          last_sync: { run_id: input.progressTo ?? null, at, status, error: null, uploaded: upload.uploaded, failed: { files: upload.failed.files, bytes: upload.failed.bytes }, unlisted: upload.unlisted.files },
          robot_sync_state: state,
        },
      },
    );
  }

  return {
    /** Which robots a run covers: the connected ones (all known robots when `robotIds` is not given). */
    async listRobotsToSync({ robotIds }: { robotIds?: string[] }): Promise<RobotsToSync> {
      const rows = await models.Robot.find(robotIds ? { _id: { $in: robotIds } } : {}, { connected: 1 }).lean<Array<Pick<OfflineRobot, '_id' | 'connected'>>>();
      const found = new Set(rows.map((r) => r._id));
      return {
        connected: rows.filter((r) => r.connected).map((r) => r._id).sort(),
        notConnected: rows.filter((r) => !r.connected).map((r) => r._id).sort(),
        unknown: (robotIds ?? []).filter((id) => !found.has(id)),
      };
    },

    /**
     * One robot's sync on one SSH session: the listing; when the perfect-state token and the listing are those of
     * the last complete sync, nothing else (no entry read, nothing hashed or sent). Otherwise the inventory
     * (hashing only what changed) and the upload of the RFs its perfect state lists and it lacks. The robot's
     * record (last sync, inventory time, sync state) is one write at the end. A retry after a crash lists again
     * (cheap) and resumes a large RF from the last heartbeat.
     */
    async syncRobot(input: SyncRobotInput): Promise<SyncRobotResult> {
      const beat = keepAlive();
      const ms: SyncRobotResult['ms'] = { connect: 0, list: 0, read: 0, hash: 0, upload: 0, flush: 0, relist: 0, inventory: 0, record: 0 };
      let t = Date.now();
      const lap = (k: keyof typeof ms) => {
        const now = Date.now();
        ms[k] += now - t;
        t = now;
      };
      try {
        // The token first, the entries after: a writer marks after writing, so a token seen here is never newer
        // than the entries read below.
        const robot = await loadRobot(models, input.robotId);
        const state = robot.robot_sync_state as RobotSyncState | null;
        const rev = robot.perfect_state_rev ?? null;
        const maybeUnchanged = !!state?.files && rev !== null && state.perfect_state_rev === rev && state.rf_root === robot.rf_root;
        // Unless the robot may be unchanged, its entries are read while SSH connects and lists.
        const readEntries = () => {
          const reads = Promise.all([
            readPerfectState(models, robot),
            storedInventory(models, robot._id),
          ]);
          reads.catch(() => undefined); // awaited below; a connect failure must not leave it unhandled
          return reads;
        };
        const early = maybeUnchanged ? null : readEntries();
        return await withConnection(models, robot, async (client) => {
          lap('connect');
          // Maybe unchanged: the robot hashes its own listing (64 characters travel, not the listing).
          if (maybeUnchanged && (await remoteListingDigest(client, robot.rf_root)) === state!.listing_sha256) {
            lap('list');
            const upload: RobotUploadResult = {
              planned: { files: 0, bytes: 0 },
              uploaded: { files: 0, bytes: 0 },
              sentBytes: 0,
              resumedFromBytes: 0,
              skipped: state!.skipped,
              failed: { files: 0, bytes: 0, errors: [] },
              unlisted: state!.unlisted,
            };
            await recordRobot(input, robot, upload, state);
            lap('record');
            return { inventory: { files: state!.files.files, bytes: state!.files.bytes, hashed: 0, removed: 0 }, upload, unchanged: true, ms, recorded: true };
          }
          // The entries usually arrive before the listing: an upload's sessions open while the robot lists.
          let pre: PreparedUpload | null = null;
          void early?.then(([wanted, stored]) => (pre = prepareUpload(client, robot.rf_root, wanted, stored)), () => undefined);
          const listing = await listRemote(client, robot.rf_root);
          lap('list');
          const [wanted, stored] = await (early ?? readEntries());
          lap('read');
          const inv = await inventoryFromListing(models, robot._id, client, listing, stored);
          lap('hash');
          const p = plan(cfg, robot, wanted, inv.holdings);
          // Nothing to send after all. (On an error the connection's end closes prepared sessions with it.)
          if (p.items.length === 0) (pre as PreparedUpload | null)?.release();
          const result = emptyResult(p);
          let after: RemoteStat[] = listing;
          if (p.items.length > 0) {
            // What we installed goes into the inventory: its sha256 is the cache's, size and mtime the robot's.
            // Most entries are written during the upload (its flush listed the parts); the listing after it adds
            // the rest (large RFs, sent after the flush) and is the one the next run's digest compares.
            const writer = inventoryWriter(models, robot._id, new Set(p.known.keys()));
            const recorded = new Set<string>();
            /** Its entry, once: the robot's size and mtime (a whole file's only), the cache's sha256. */
            const recordInstalled = (item: UploadItem, st: RemoteStat | undefined) => {
              if (!st || st.size !== item.size || recorded.has(item.remotePath)) return;
              recorded.add(item.remotePath);
              writer.add({ ...st, sha256: item.sha256 });
            };
            try {
              const up = await upload(deps, input, robot, client, p, beat, recordInstalled, pre);
              ms.flush = up.flushMs;
              lap('upload');
              if (up.installed.length) {
                const installed = new Map(up.installed.map((i) => [i.remotePath, i]));
                after = await listRemote(client, robot.rf_root, (st) => {
                  const item = installed.get(st.path);
                  if (item) recordInstalled(item, st);
                });
                lap('relist');
              }
              await writer.close();
              lap('inventory');
              Object.assign(result, { uploaded: up.uploaded, sentBytes: up.sentBytes, resumedFromBytes: up.resumedFromBytes });
              const sizes = new Map(p.items.map((i) => [i.remotePath, i.size]));
              for (const f of up.failed) {
                result.failed.files++;
                result.failed.bytes += sizes.get(f.path) ?? 0;
                if (result.failed.errors.length < SAMPLE) result.failed.errors.push(f);
              }
            } catch (e) {
              await writer.close().catch(() => undefined); // no write left running behind a retry
              throw e;
            }
          }
          // Complete: every listed RF is on the robot. Then the next run may find nothing changed.
          const complete = result.failed.files === 0 && result.uploaded.files === result.planned.files;
          const next: RobotSyncState | null =
            complete && rev !== null
              ? {
                  perfect_state_rev: rev,
                  rf_root: robot.rf_root,
                  listing_sha256: listingDigest(after),
                  files: { files: after.length, bytes: sumSizes(after) },
                  skipped: { files: result.skipped.files + result.planned.files, bytes: result.skipped.bytes + result.planned.bytes },
                  unlisted: result.unlisted,
                }
              : null;
          await recordRobot(input, robot, result, next);
          lap('record');
          return { inventory: inv.result, upload: result, unchanged: false, ms, recorded: true };
        });
      } finally {
        beat.stop();
      }
    },

    /** Stores the outcome of robots syncRobot did not record (not connected, unreachable...) as their `last_sync`. */
    async recordRobotSync({ runId, results }: { runId: string; results: Array<{ robotId: string; status: string; summary: unknown }> }): Promise<void> {
      const at = new Date();
      for (const r of results) {
        await models.Robot.updateOne({ _id: r.robotId }, { $set: { last_sync: { run_id: runId, at, status: r.status, ...(r.summary as object) } } });
      }
    },
  };
}

export type RobotSyncActivities = ReturnType<typeof createRobotSyncActivities>;
