// Presence at fleet scale: the bridge's per-robot presence reads and writes gathered over a few milliseconds into
// one statement each. Measured: 10,000 robots connecting at once cost a presence insert and an open-jobs find per
// robot (state-as-presence added a presence read), every filter a collection scan on FerretDB, and FerretDB sat
// at 105 % CPU for 12 minutes before a rollout could start. Now a window of up to 50 robots costs one insertMany
// (the new robots), at most one updateMany per value for robots stored before (only the documents whose value
// changes), one `$in` read of their open jobs and one of their stored presence.
//
// Each robot's messages stay in order: the bridge handles a robot's presence messages one after the other, and
// every call here resolves only once its batch's statement has answered.
import type { OtaJob, OtaModels } from '../../common/models/ota';
import { isTerminal, JOB_STATUSES, type JobStatus } from '../../common/protocol';
import { chunks } from '../../common/db';
import { withDbTimeout } from '../../activities/db/timeout';
import { duplicateIds, onlyDuplicateKeys } from '../../activities/db/ota-rollout-results';

/** Documents changed per update statement (FerretDB rewrites them one by one, ~30 ms each on a busy box). */
const UPDATE_CHUNK = 10;
const NON_TERMINAL_STATUSES: JobStatus[] = JOB_STATUSES.filter((s) => !isTerminal(s));

/** An open job as the presence handling needs it. */
export type OpenJob = Pick<OtaJob, '_id' | 'status' | 'timestamp' | 'deployment_id' | 'robot_id'>;

/**
 * Calls of `add` made within `windowMs` (or until `max` are waiting) answered by one `run` over all their inputs;
 * `run` answers one result per input, in order. A failed run rejects every call of its batch (callers retry).
 */
export class Gathered<I, R> {
  private waiting: Array<{ input: I; resolve: (r: R) => void; reject: (e: unknown) => void }> = [];
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly run: (inputs: I[]) => Promise<R[]>,
    private readonly windowMs: number,
    private readonly max: number,
  ) {}

  add(input: I): Promise<R> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ input, resolve, reject });
      if (this.waiting.length >= this.max) void this.flush();
      else this.timer ??= setTimeout(() => void this.flush(), this.windowMs);
    });
  }

  private async flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const batch = this.waiting;
    this.waiting = [];
    if (batch.length === 0) return;
    try {
      const out = await this.run(batch.map((b) => b.input));
      batch.forEach((b, i) => b.resolve(out[i]));
    } catch (err) {
      for (const b of batch) b.reject(err);
    }
  }
}

export interface PresenceBatchOptions {
  models: Pick<OtaModels, 'RobotPresence' | 'OtaJob'>;
  dbTimeoutMs: number;
  /** How long calls are gathered (default 10 ms). */
  windowMs?: number;
  /** Robots per write (at most 50: FerretDB's bulk limit) and per read (default 500). */
  maxWrite?: number;
  maxRead?: number;
}

export class PresenceBatch {
  private readonly writes: Gathered<{ robotId: string; online: boolean }, void>;
  private readonly stored: Gathered<string, boolean>;
  private readonly open: Gathered<string, OpenJob[]>;

  constructor(private readonly o: PresenceBatchOptions) {
    const windowMs = o.windowMs ?? 10;
    this.writes = new Gathered((items) => this.write(items), windowMs, Math.min(o.maxWrite ?? 50, 50));
    this.stored = new Gathered((ids) => this.readOnline(ids), windowMs, o.maxRead ?? 500);
    this.open = new Gathered((ids) => this.readOpenJobs(ids), windowMs, o.maxRead ?? 500);
  }

  /** Stores a robot's presence (resolves once stored). */
  store(robotId: string, online: boolean): Promise<void> {
    return this.writes.add({ robotId, online });
  }

  /** The robot's stored presence (false when it has none). */
  isOnline(robotId: string): Promise<boolean> {
    return this.stored.add(robotId);
  }

  /** The robot's jobs open in their documents (rollout jobs may have ended in a result row: the caller overlays). */
  openJobs(robotId: string): Promise<OpenJob[]> {
    return this.open.add(robotId);
  }

  /**
   * Insert-first (an insert costs no scan); robots stored before (duplicate key) are updated by one updateMany per
   * value, only where the value changes: FerretDB rewrites each matched document (~30 ms each on a busy box), and a
   * retained presence replayed to a restarted bridge changes nothing. Within a batch a robot's last call wins.
   */
  private async write(items: Array<{ robotId: string; online: boolean }>): Promise<void[]> {
    const { RobotPresence } = this.o.models;
    const t = this.o.dbTimeoutMs;
    const last = new Map(items.map((i) => [i.robotId, i.online]));
    const now = new Date();
    const docs = [...last].map(([robotId, online]) => ({ _id: robotId, online, changed_at: now }));
    let existing: string[] = [];
    try {
      await withDbTimeout('insert presence', t, RobotPresence.insertMany(docs, { ordered: false }));
    } catch (err) {
      if (!onlyDuplicateKeys(err)) throw err;
      existing = duplicateIds(err, docs);
    }
    // Updates in statements of UPDATE_CHUNK documents: under load one of 50 changed documents could pass the
    // timeout, and a retried batch does all of its work again (seen: a fleet flapping on a saturated box).
    for (const online of [true, false]) {
      for (const ids of chunks(existing.filter((id) => last.get(id) === online), UPDATE_CHUNK)) {
        await withDbTimeout(
          'update presence',
          t,
          RobotPresence.updateMany({ _id: { $in: ids }, online: { $ne: online } }, { $set: { online, changed_at: now } }),
        );
      }
    }
    return items.map(() => undefined);
  }

  private async readOnline(ids: string[]): Promise<boolean[]> {
    const rows = await withDbTimeout(
      'load presence',
      this.o.dbTimeoutMs,
      this.o.models.RobotPresence.find({ _id: { $in: [...new Set(ids)] }, online: true }, { _id: 1 }).lean<Array<{ _id: string }>>(),
    );
    const online = new Set(rows.map((r) => r._id));
    return ids.map((id) => online.has(id));
  }

  private async readOpenJobs(robotIds: string[]): Promise<OpenJob[][]> {
    const rows = await withDbTimeout(
      'find open jobs',
      this.o.dbTimeoutMs,
      this.o.models.OtaJob.find(
        { robot_id: { $in: [...new Set(robotIds)] }, status: { $in: NON_TERMINAL_STATUSES } },
        { _id: 1, status: 1, timestamp: 1, deployment_id: 1, robot_id: 1 },
      ).lean<OpenJob[]>(),
    );
    const byRobot = new Map<string, OpenJob[]>();
    for (const r of rows) byRobot.set(r.robot_id, [...(byRobot.get(r.robot_id) ?? []), r]);
    return robotIds.map((id) => byRobot.get(id) ?? []);
  }
}
