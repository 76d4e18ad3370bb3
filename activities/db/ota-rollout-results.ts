// Terminal statuses of rollout jobs, stored by INSERT into `ota_rollout_results` (schema: common/models/ota.ts).
// Measured: a 1,000-robot rollout spent 24-29 s of its ~35 s storing terminal states as job updates (FerretDB
// rewrites document by document, ~30 ms each), while inserts of 50 rows cost about one statement. So a rollout
// job's document keeps status PENDING, and its end is one row here, `_id` = job id: the first end stored wins
// (a duplicate key is "already recorded": retried and replayed activities stay idempotent, and no later report
// can move a job out of its terminal status). Every reader of jobs overlays these rows (overlayRolloutResults);
// the archiver folds them into the archived job and deletes them once the rollout is finished.
import type { FilterQuery } from 'mongoose';
import { isTerminal, JOB_STATUSES, type JobStatus } from '../../common/protocol';
import { chunks, INSERT_CHUNK } from '../../common/db';
import { forEachLimited } from '../../common/limit';
import type { OtaJob, OtaModels } from '../../common/models/ota';
import { DEFAULT_DB_TIMEOUT_MS, withDbTimeout } from './timeout';

/** A row of `ota_rollout_results` (plain, as read with lean()). */
export interface RolloutResultRow {
  _id: string;
  deployment_id: string;
  robot_id: string;
  timestamp: Date;
  status: JobStatus;
  error_msg: string | null;
  finished_at: Date;
  transitions?: Array<{ status: JobStatus; error_msg: string | null; at: Date }>;
  /** The apply call that inserted it (workflow run / activity id), so a retry of that call knows its own rows. */
  stored_by?: string;
}
type ResultsModel = OtaModels['OtaRolloutResult'];

const OPEN: JobStatus[] = JOB_STATUSES.filter((st) => !isTerminal(st));

/** Ids per `$in` read: one statement is one collection scan on FerretDB, however many ids it names. */
const READ_CHUNK = 1000;

/** True when a bulk write failed only on duplicate keys (rows recorded earlier). */
export function onlyDuplicateKeys(err: unknown): boolean {
  const e = err as { code?: number; writeErrors?: Array<{ code?: number; err?: { code?: number } }> | { code?: number } };
  const list = Array.isArray(e.writeErrors) ? e.writeErrors : e.writeErrors ? [e.writeErrors] : [];
  if (list.length === 0) return e.code === 11000;
  return list.every((w) => ((w as { code?: number }).code ?? (w as { err?: { code?: number } }).err?.code) === 11000);
}

/**
 * Ids of the docs of an unordered insertMany that failed only on duplicate keys (those that existed already).
 * When the error does not say which (no index per write error), all of them: the caller reads them.
 */
export function duplicateIds(err: unknown, docs: ReadonlyArray<{ _id: string }>): string[] {
  const e = err as { writeErrors?: Array<{ index?: number; err?: { index?: number } }> | { index?: number } };
  const list = Array.isArray(e.writeErrors) ? e.writeErrors : e.writeErrors ? [e.writeErrors] : [];
  const idx = list.map((w) => (w as { index?: number }).index ?? (w as { err?: { index?: number } }).err?.index).filter((i): i is number => typeof i === 'number');
  return idx.length > 0 && idx.length === list.length ? idx.map((i) => docs[i]._id) : docs.map((d) => d._id);
}

/**
 * Inserts terminal results in chunks of INSERT_CHUNK (unordered): rows whose job already has one are skipped by the
 * database (duplicate key), so a retry or a late second end changes nothing. `finished_at` is stamped per chunk.
 * Answers the ids that had a row already (may include more, see duplicateIds).
 */
export async function insertRolloutResults(
  model: ResultsModel,
  rows: ReadonlyArray<Omit<RolloutResultRow, 'finished_at'>>,
  dbTimeoutMs = DEFAULT_DB_TIMEOUT_MS,
  onChunk?: () => void,
): Promise<Set<string>> {
  const duplicates = new Set<string>();
  // INSERT_CHUNK rows per statement: 20 statements of 50 per 1,000 reports were 1-7 s of an apply at 10,000 robots.
  for (const part of chunks(rows, INSERT_CHUNK)) {
    onChunk?.();
    const now = new Date();
    const docs = part.map((r) => ({ ...r, finished_at: now, transitions: (r.transitions ?? []).map((t) => ({ ...t, at: now })) }));
    try {
      await withDbTimeout('insert rollout results', dbTimeoutMs, model.insertMany(docs, { ordered: false }));
    } catch (err) {
      if (!onlyDuplicateKeys(err)) throw err;
      for (const id of duplicateIds(err, docs)) duplicates.add(id);
    }
  }
  return duplicates;
}

/**
 * Up to this many results are read one by one by id: a filter of `_id` alone is the one FerretDB answers without
 * scanning (about 9 ms each on a busy box), while a `$in` scans every row (10,000 results at the end of a
 * 10,000-robot rollout: 0.8-3.8 s idle, up to 12 s measured under load, for the few duplicates of an apply).
 */
const POINT_READS_MAX = 32;

/** The results of jobs `ids` (those that have one), by job id. */
export async function rolloutResultsOf(model: ResultsModel, ids: readonly string[], dbTimeoutMs = DEFAULT_DB_TIMEOUT_MS): Promise<Map<string, RolloutResultRow>> {
  const out = new Map<string, RolloutResultRow>();
  const unique = [...new Set(ids)];
  if (unique.length <= POINT_READS_MAX) {
    await forEachLimited(unique, 8, async (id) => {
      const r = await withDbTimeout('load rollout result', dbTimeoutMs, model.findById(id).lean<RolloutResultRow>());
      if (r) out.set(r._id, r);
    });
    return out;
  }
  for (const part of chunks(unique, READ_CHUNK)) {
    const rows = await withDbTimeout('load rollout results', dbTimeoutMs, model.find({ _id: { $in: part } }).lean<RolloutResultRow[]>());
    for (const r of rows) out.set(r._id, r);
  }
  return out;
}

/** A job document with its result (if any) applied: status, error, end time, transitions appended. */
export function withResult<J extends Pick<OtaJob, 'status'>>(job: J, result: RolloutResultRow | undefined): J {
  if (!result) return job;
  const j = job as J & Partial<Pick<OtaJob, 'updated_at' | 'transitions'>>;
  return {
    ...job,
    status: result.status,
    error_msg: result.error_msg,
    finished_at: result.finished_at,
    // A later write on the document (the bridge's "installed after the end" note) keeps its own time.
    updated_at: j.updated_at && j.updated_at > result.finished_at ? j.updated_at : result.finished_at,
    transitions: [...(j.transitions ?? []), ...(result.transitions ?? [])],
  };
}

/** Rollout jobs still open in their document that may have a result row (the others are what they say). */
const mayHaveResult = (j: Pick<OtaJob, 'status' | 'deployment_id'>): boolean => Boolean(j.deployment_id) && !isTerminal(j.status as JobStatus);

/**
 * `jobs` with their rollout results applied: one `$in` read of the results for the open rollout jobs among them
 * (none for single jobs or jobs already terminal in their document, e.g. archived ones).
 */
export async function overlayRolloutResults<J extends Pick<OtaJob, '_id' | 'status' | 'deployment_id'>>(
  model: ResultsModel,
  jobs: readonly J[],
  dbTimeoutMs = DEFAULT_DB_TIMEOUT_MS,
): Promise<J[]> {
  const ids = jobs.filter(mayHaveResult).map((j) => String(j._id));
  if (ids.length === 0) return [...jobs];
  const results = await rolloutResultsOf(model, ids, dbTimeoutMs);
  return jobs.map((j) => withResult(j, results.get(String(j._id))));
}

/** overlayRolloutResults for one job (null stays null). */
export async function overlayRolloutResult<J extends Pick<OtaJob, '_id' | 'status' | 'deployment_id'>>(
  model: ResultsModel,
  job: J | null,
  dbTimeoutMs = DEFAULT_DB_TIMEOUT_MS,
): Promise<J | null> {
  if (!job || !mayHaveResult(job)) return job;
  const r = await withDbTimeout('load rollout result', dbTimeoutMs, model.findById(job._id).lean<RolloutResultRow>());
  return withResult(job, r ?? undefined);
}

/**
 * The first `n` live jobs matching `filter` (a /jobs query: robot_id, status, deployment_id, cursor), newest
 * first, with rollout results applied. A status filter has to see through the documents of ended rollout jobs
 * (they say PENDING): for a terminal status the result rows matching it join the page; for an open one, up to
 * as many more documents are read as there are result rows that could drop out, so the page stays full.
 */
export async function liveJobsPage(
  models: Pick<OtaModels, 'OtaJob' | 'OtaRolloutResult'>,
  filter: FilterQuery<OtaJob>,
  n: number,
  dbTimeoutMs = DEFAULT_DB_TIMEOUT_MS,
): Promise<OtaJob[]> {
  const { OtaJob: Jobs, OtaRolloutResult: Results } = models;
  const sort = { timestamp: -1, _id: -1 } as const;
  const page = (f: FilterQuery<OtaJob>, limit: number) => withDbTimeout('list jobs', dbTimeoutMs, Jobs.find(f).sort(sort).limit(limit).lean<OtaJob[]>());
  const status = filter.status as JobStatus | undefined;
  if (status === undefined) return overlayRolloutResults(Results, await page(filter, n), dbTimeoutMs);
  const { status: _status, ...rest } = filter;
  let rows: OtaJob[];
  if (isTerminal(status)) {
    const ended = await withDbTimeout('list rollout results', dbTimeoutMs, Results.find({ ...rest, status }, { _id: 1 }).sort(sort).limit(n).lean<Array<{ _id: string }>>());
    const [own, endedDocs] = await Promise.all([page(filter, n), ended.length > 0 ? page({ _id: { $in: ended.map((r) => r._id) } }, ended.length) : []]);
    rows = [...own, ...(await overlayRolloutResults(Results, endedDocs, dbTimeoutMs))];
  } else {
    const mayDrop = await withDbTimeout('count rollout results', dbTimeoutMs, Results.countDocuments(rest));
    rows = await overlayRolloutResults(Results, await page(filter, n + mayDrop), dbTimeoutMs);
  }
  return rows
    .filter((j) => j.status === status)
    .sort((a, b) => new Date(b.timestamp).getTime() - new Date(a.timestamp).getTime() || (a._id < b._id ? 1 : a._id > b._id ? -1 : 0))
    .slice(0, n);
}

/**
 * Ends every open job of rollout `rolloutId` with `status` (result rows; jobs already ended keep their end).
 * For the reconciler: a rollout whose workflow is gone ends all its jobs at once, so a finished rollout never
 * has an open job left (its jobs need no further look). Returns the ids ended now.
 */
export async function endOpenRolloutJobs(
  models: Pick<OtaModels, 'OtaJob' | 'OtaRolloutResult'>,
  rolloutId: string,
  status: JobStatus,
  reason: string,
  dbTimeoutMs = DEFAULT_DB_TIMEOUT_MS,
): Promise<string[]> {
  const docs = await withDbTimeout(
    'load open rollout jobs',
    dbTimeoutMs,
    models.OtaJob.find({ deployment_id: rolloutId, status: { $in: OPEN } }, { _id: 1, robot_id: 1, timestamp: 1, status: 1, deployment_id: 1 }).lean<
      Array<Pick<OtaJob, 'robot_id' | 'timestamp' | 'status' | 'deployment_id'> & { _id: string }>
    >(),
  );
  const open = (await overlayRolloutResults(models.OtaRolloutResult, docs, dbTimeoutMs)).filter((j) => !isTerminal(j.status as JobStatus));
  await insertRolloutResults(
    models.OtaRolloutResult,
    open.map((j) => ({ _id: j._id, deployment_id: rolloutId, robot_id: j.robot_id, timestamp: j.timestamp, status, error_msg: reason, transitions: [{ status, error_msg: reason, at: new Date() }] })),
    dbTimeoutMs,
  );
  return open.map((j) => j._id);
}

/** Ids of the rollouts that are finished (not RUNNING or PAUSED): all their jobs have ended. */
export async function finishedRolloutIds(models: Pick<OtaModels, 'OtaRollout'>, dbTimeoutMs = DEFAULT_DB_TIMEOUT_MS): Promise<string[]> {
  const rows = await withDbTimeout('load finished rollouts', dbTimeoutMs, models.OtaRollout.find({ status: { $nin: ['RUNNING', 'PAUSED'] } }, { _id: 1 }).lean<Array<{ _id: string }>>());
  return rows.map((r) => r._id);
}
