// Intermediate statuses of batched single deploys (jobs of a `singles-…` batch, api/ota/deploy-batcher.ts), stored by
// INSERT into `ota_job_progress` (schema: common/models/ota.ts). A batched job is driven by the rollout machinery,
// whose job document keeps status PENDING until a terminal result row lands (activities/db/ota-rollout-results.ts),
// so without these rows job_state showed PENDING until the end, where the reference (and a job with its own
// workflow) shows RECEIVED and DOWNLOADING. Storing them as job updates would cost an update scan per report on
// FerretDB; instead the bridge inserts one row per (job, status), `_id` = `<job_id>:<status>` (a duplicate key is
// "already seen"), gathered over a short window into one insertMany. Readers (findJob, the /jobs page) overlay
// them: the furthest status in the protocol's order wins, and a terminal result row wins over every one of them.
// The archiver folds them into the archived job and deletes them.
import type { FilterQuery } from 'mongoose';
import { chunks } from '../../common/db';
import type { Logger } from '../../common/logger';
import type { OtaJob, OtaModels } from '../../common/models/ota';
import { isTerminal, type JobStatus } from '../../common/protocol';
import { isForwardTransition } from '../../workflows/ota-status';
import { liveJobsPage, onlyDuplicateKeys } from './ota-rollout-results';
import { DEFAULT_DB_TIMEOUT_MS, withDbTimeout } from './timeout';

/** Batch ids (the jobs' deployment_id) of single deploys start with this; real rollouts have bare uuids. */
export const SINGLES_PREFIX = 'singles-';
export const isSinglesBatch = (deploymentId: string | null | undefined): boolean => Boolean(deploymentId?.startsWith(SINGLES_PREFIX));

export const progressRowId = (jobId: string, status: JobStatus): string => `${jobId}:${status}`;

/** A row of `ota_job_progress` (plain, as read with lean()). */
export interface JobProgressRow {
  _id: string;
  job_id: string;
  deployment_id: string;
  robot_id: string;
  status: JobStatus;
  at: Date;
}
type ProgressModel = OtaModels['OtaJobProgressRow'];

/** Inserts rows in chunks of 50 (unordered); rows already there (duplicate key) are skipped by the database. */
export async function insertProgressRows(model: ProgressModel, rows: readonly JobProgressRow[], dbTimeoutMs = DEFAULT_DB_TIMEOUT_MS): Promise<void> {
  for (const part of chunks(rows)) {
    try {
      await withDbTimeout('insert job progress', dbTimeoutMs, model.insertMany(part, { ordered: false }));
    } catch (err) {
      if (!onlyDuplicateKeys(err)) throw err;
    }
  }
}

/** Open batched single jobs: the only ones that may have progress rows worth applying. */
const mayHaveProgress = (j: Pick<OtaJob, 'status' | 'deployment_id'>): boolean => isSinglesBatch(j.deployment_id) && !isTerminal(j.status as JobStatus);

/** `job` moved to the furthest of `rows` (forward moves only), their statuses appended to its transitions. */
export function withProgress<J extends Pick<OtaJob, 'status'>>(job: J, rows: readonly JobProgressRow[]): J {
  const j = job as J & Partial<Pick<OtaJob, 'updated_at' | 'transitions'>>;
  let status = job.status as JobStatus;
  let updated = j.updated_at;
  const passed: Array<{ status: JobStatus; error_msg: null; at: Date }> = [];
  // Ascending by the protocol's order: a DOWNLOADING seen before its RECEIVED row was written still reads in order.
  for (const r of [...rows].sort((a, b) => (isForwardTransition(a.status, b.status) ? -1 : isForwardTransition(b.status, a.status) ? 1 : 0))) {
    if (!isForwardTransition(status, r.status)) continue;
    status = r.status;
    passed.push({ status: r.status, error_msg: null, at: r.at });
    if (!updated || r.at > updated) updated = r.at;
  }
  if (passed.length === 0) return job;
  return { ...job, status, updated_at: updated, transitions: [...(j.transitions ?? []), ...passed] };
}

/** The progress rows of jobs `ids`, by job id (one `$in` read). */
async function progressOf(model: ProgressModel, ids: readonly string[], dbTimeoutMs: number): Promise<Map<string, JobProgressRow[]>> {
  const out = new Map<string, JobProgressRow[]>();
  if (ids.length === 0) return out;
  const rows = await withDbTimeout('load job progress', dbTimeoutMs, model.find({ job_id: { $in: [...ids] } }).lean<JobProgressRow[]>());
  for (const r of rows) out.set(r.job_id, [...(out.get(r.job_id) ?? []), r]);
  return out;
}

/** `jobs` (terminal results already applied) with their progress rows applied; no read when none may have any. */
export async function overlayJobProgress<J extends Pick<OtaJob, '_id' | 'status' | 'deployment_id'>>(
  model: ProgressModel,
  jobs: readonly J[],
  dbTimeoutMs = DEFAULT_DB_TIMEOUT_MS,
): Promise<J[]> {
  const ids = jobs.filter(mayHaveProgress).map((j) => String(j._id));
  if (ids.length === 0) return [...jobs];
  const rows = await progressOf(model, ids, dbTimeoutMs);
  return jobs.map((j) => withProgress(j, rows.get(String(j._id)) ?? []));
}

const newestFirst = (a: Pick<OtaJob, '_id' | 'timestamp'>, b: Pick<OtaJob, '_id' | 'timestamp'>): number =>
  new Date(b.timestamp).getTime() - new Date(a.timestamp).getTime() || (a._id < b._id ? 1 : a._id > b._id ? -1 : 0);

/**
 * liveJobsPage (a /jobs page of live jobs, results applied) with progress rows applied too. A status filter has to
 * see through batched jobs whose document says PENDING: for RECEIVED / DOWNLOADING the jobs with a row of that
 * status join the page; for PENDING, as many more documents are read as there are rows that could move one out.
 */
export async function liveJobsPageWithProgress(
  models: Pick<OtaModels, 'OtaJob' | 'OtaRolloutResult' | 'OtaJobProgressRow'>,
  filter: FilterQuery<OtaJob>,
  n: number,
  dbTimeoutMs = DEFAULT_DB_TIMEOUT_MS,
): Promise<OtaJob[]> {
  const { OtaJobProgressRow: Progress } = models;
  const status = filter.status as JobStatus | undefined;
  if (status === undefined || isTerminal(status)) return overlayJobProgress(Progress, await liveJobsPage(models, filter, n, dbTimeoutMs), dbTimeoutMs);
  const { status: _status, ...rest } = filter;
  const rowFilter: FilterQuery<JobProgressRow> = {};
  if (rest.robot_id !== undefined) rowFilter.robot_id = rest.robot_id;
  if (rest.deployment_id !== undefined) rowFilter.deployment_id = rest.deployment_id;
  let rows: OtaJob[];
  if (status === 'PENDING') {
    const mayMove = await withDbTimeout('count job progress', dbTimeoutMs, Progress.countDocuments(rowFilter));
    rows = await liveJobsPage(models, filter, n + mayMove, dbTimeoutMs);
  } else {
    const seen = await withDbTimeout('list job progress', dbTimeoutMs, Progress.find({ ...rowFilter, status }, { job_id: 1 }).lean<Array<Pick<JobProgressRow, 'job_id'>>>());
    const ids = [...new Set(seen.map((r) => r.job_id))];
    const [own, moved] = await Promise.all([
      liveJobsPage(models, filter, n, dbTimeoutMs),
      // Their results too: a job that has ended since keeps its end.
      ids.length > 0 ? liveJobsPage(models, { ...rest, _id: { $in: ids } }, ids.length, dbTimeoutMs) : [],
    ]);
    const ownIds = new Set(own.map((j) => j._id));
    rows = [...own, ...moved.filter((j) => !ownIds.has(j._id))];
  }
  return (await overlayJobProgress(Progress, rows, dbTimeoutMs))
    .filter((j) => j.status === status)
    .sort(newestFirst)
    .slice(0, n);
}

/** Folds the progress rows of `jobs` into them (for the archiver); returns the jobs and the row ids to delete. */
export async function foldJobProgress(
  model: ProgressModel,
  jobs: readonly OtaJob[],
  dbTimeoutMs = DEFAULT_DB_TIMEOUT_MS,
): Promise<{ jobs: OtaJob[]; rowIds: string[] }> {
  const ids = jobs.filter((j) => isSinglesBatch(j.deployment_id)).map((j) => j._id);
  const rows = await progressOf(model, ids, dbTimeoutMs);
  if (rows.size === 0) return { jobs: [...jobs], rowIds: [] };
  const folded = jobs.map((j) => {
    const mine = rows.get(j._id);
    if (!mine) return j;
    // The job has ended: its statuses on the way go into its history before the end, in order.
    const passed = [...mine].sort((a, b) => (isForwardTransition(a.status, b.status) ? -1 : 1)).map((r) => ({ status: r.status, error_msg: null, at: r.at }));
    const known = new Set((j.transitions ?? []).map((t) => t.status));
    const before = passed.filter((t) => !known.has(t.status));
    return { ...j, transitions: [...before, ...(j.transitions ?? [])] } as OtaJob;
  });
  return { jobs: folded, rowIds: [...rows.values()].flat().map((r) => r._id) };
}

/**
 * The bridge's writer of progress rows: reports seen within `windowMs` go out as one insertMany. A status already
 * stored (or on its way) for a job is skipped from memory, before any database work; a failed insert forgets its
 * rows, so the robot's next heartbeat (it re-sends its state map) stores them.
 */
export class JobProgressRecorder {
  private pending: JobProgressRow[] = [];
  private timer: NodeJS.Timeout | null = null;
  private readonly known = new Set<string>();
  private inFlight: Promise<void> = Promise.resolve();

  constructor(
    private readonly model: ProgressModel,
    private readonly log: Logger,
    private readonly windowMs = 100,
    private readonly dbTimeoutMs = DEFAULT_DB_TIMEOUT_MS,
    /** Row ids remembered (a fleet's worth); the oldest are forgotten first. */
    private readonly maxKnown = 50_000,
  ) {}

  add(jobId: string, deploymentId: string, robotId: string, status: JobStatus): void {
    const _id = progressRowId(jobId, status);
    if (this.known.has(_id)) return;
    this.known.add(_id);
    if (this.known.size > this.maxKnown) {
      const oldest = this.known.values().next().value;
      if (oldest !== undefined) this.known.delete(oldest);
    }
    this.pending.push({ _id, job_id: jobId, deployment_id: deploymentId, robot_id: robotId, status, at: new Date() });
    this.timer ??= setTimeout(() => void this.flush(), this.windowMs);
  }

  /** Stores what is pending now (and waits for earlier flushes). */
  flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const rows = this.pending.splice(0);
    if (rows.length > 0) {
      this.inFlight = this.inFlight.then(() =>
        insertProgressRows(this.model, rows, this.dbTimeoutMs).catch((err: unknown) => {
          for (const r of rows) this.known.delete(r._id);
          this.log.warn({ err, rows: rows.length }, 'job progress rows not stored; the next heartbeats store them');
        }),
      );
    }
    return this.inFlight;
  }
}
