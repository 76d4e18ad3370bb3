// The job archiver: keeps `ota_jobs` to the jobs that still move. FerretDB scans the whole collection on every
// filter, so every dispatch, report and status write got slower as finished jobs piled up (a second 200-robot
// burst in the same data directory took twice as long as the first). A pass moves jobs that have been terminal for
// `archiveAfterMs` into `ota_jobs_archive`, in chunks of 50: one read, then per chunk one bulk replace (upsert)
// into the archive and one guarded delete from the live collection.
//
// Which jobs move: single jobs (no deployment_id) terminal for archiveAfterMs; rollout jobs only once their rollout
// is finished (not RUNNING/PAUSED) for as long, because a running rollout's workflow reads and updates its jobs
// in the live collection (activities/mqtt/ota-rollout.ts).
//
// A rollout job's end is a result row while it is live (activities/db/ota-rollout-results.ts; its document still
// says PENDING): the archived copy is the document with its result folded in, and the row goes after the document.
//
// Crash safety without transactions: the copy is written before the original is deleted, and the delete is
// guarded by `updated_at` (only a job not written since it was read goes), so a job is never lost and a late
// write (the bridge noting "installed after the end") stays in the live copy, which the next pass copies again.
// Readers (job_state, /jobs, cancel, the reconciler, the bridge, the workflow's activities) look in the live
// collection first, then the archive (findJob in activities/db/ota-jobs.ts), so a job in both for a moment is
// read from its newer copy.
import type { FilterQuery } from 'mongoose';
import { chunks } from '../../common/db';
import type { OtaJob, OtaRollout } from '../../common/models/ota';
import { isTerminal, JOB_STATUSES } from '../../common/protocol';
import type { OtaContext } from './types';
import { finishedRolloutIds, withResult, type RolloutResultRow } from '../../activities/db/ota-rollout-results';
import { foldJobProgress } from '../../activities/db/ota-job-progress';

const TERMINAL = JOB_STATUSES.filter((st) => isTerminal(st));
const ROLLOUT_OPEN = ['RUNNING', 'PAUSED'];

export interface ArchivePass {
  /** Jobs moved into the archive by this pass. */
  moved: number;
  /** False when more jobs were due than one pass takes (archiveMaxJobsPerPass). */
  complete: boolean;
}

/** One archive pass (see the header); `nowMs` for tests. */
export async function archiveFinishedJobs(ctx: Pick<OtaContext, 'models' | 'options' | 'cfg'>, nowMs = Date.now()): Promise<ArchivePass> {
  const { OtaJob, OtaJobArchive, OtaRollout: Rollout, OtaRolloutResult: Results } = ctx.models;
  const cutoff = new Date(nowMs - ctx.options.archiveAfterMs);
  const max = Math.max(1, ctx.options.archiveMaxJobsPerPass);
  const filter: FilterQuery<OtaJob> = { status: { $in: TERMINAL }, finished_at: { $lt: cutoff } };
  const ownDue = await OtaJob.find(filter).limit(max).lean<OtaJob[]>();
  // Rollout jobs ended by a result row: their documents with the result folded in.
  // Only finished rollouts' rows are read: a running rollout's must not fill the pass.
  const finished = await finishedRolloutIds(ctx.models);
  const ended = finished.length > 0 ? await Results.find({ finished_at: { $lt: cutoff }, deployment_id: { $in: finished } }).limit(max).lean<RolloutResultRow[]>() : [];
  const endedById = new Map(ended.map((r) => [r._id, r]));
  const endedDocs = ended.length > 0 ? await OtaJob.find({ _id: { $in: [...endedById.keys()] } }).lean<OtaJob[]>() : [];
  const docUpdatedAt = new Map(endedDocs.map((j) => [j._id, j.updated_at]));
  const due = [...ownDue, ...endedDocs.map((j) => withResult(j, endedById.get(j._id)))];
  // Rollout jobs wait for their rollout: one read of the rollouts these jobs belong to.
  const rolloutIds = [...new Set(due.map((j) => j.deployment_id).filter((d): d is string => Boolean(d)))];
  const settled = new Set<string>();
  for (const part of chunks(rolloutIds)) {
    const rows = await Rollout.find({ _id: { $in: part } }, { status: 1, finished_at: 1 }).lean<Array<Pick<OtaRollout, 'status' | 'finished_at'> & { _id: string }>>();
    for (const r of rows) if (!ROLLOUT_OPEN.includes(r.status) && (!r.finished_at || r.finished_at < cutoff)) settled.add(r._id);
    // A rollout document that is gone (deleted) holds nothing back.
    for (const id of part) if (!rows.some((r) => r._id === id)) settled.add(id);
  }
  const movable = due.filter((j) => !j.deployment_id || settled.has(j.deployment_id));
  let moved = 0;
  for (const chunk of chunks(movable)) {
    // A batched single job's RECEIVED / DOWNLOADING rows go into its archived history (activities/db/ota-job-progress.ts).
    const { jobs: part, rowIds: progressIds } = await foldJobProgress(ctx.models.OtaJobProgressRow, chunk);
    // Replace, not insert: a pass that died after copying (or a job copied, written again, then copied again)
    // must overwrite the older copy.
    await OtaJobArchive.bulkWrite(
      part.map((j) => ({ replaceOne: { filter: { _id: j._id }, replacement: j, upsert: true } })),
      { ordered: false },
    ).catch((err: unknown) => {
      // Two archivers (API processes) upserting the same job at once: one insert loses with E11000, and the
      // copy is there anyway. Anything else is a real failure (nothing is deleted then).
      if (!onlyDuplicateKeys(err)) throw err;
    });
    // One delete for the chunk; each job goes only if it was not written since the read (its updated_at).
    const res = await OtaJob.deleteMany({
      $or: part.map((j) =>
        docUpdatedAt.has(j._id) ? { _id: j._id, updated_at: docUpdatedAt.get(j._id) } : { _id: j._id, updated_at: j.updated_at, status: { $in: TERMINAL } },
      ),
    });
    moved += res.deletedCount ?? 0;
    // Then their result rows, each only if it was not written since (the bridge's "installed after the end" note).
    const folded = part.filter((j) => endedById.has(j._id));
    if (folded.length > 0) await Results.deleteMany({ $or: folded.map((j) => ({ _id: j._id, error_msg: endedById.get(j._id)!.error_msg })) });
    if (progressIds.length > 0) await ctx.models.OtaJobProgressRow.deleteMany({ _id: { $in: progressIds } });
  }
  // Rows whose document is gone already (a pass that died between the two deletes, or a note written in between):
  // the archived copy takes the row's end, then the row goes.
  const orphans = ended.filter((r) => !docUpdatedAt.has(r._id));
  for (const part of chunks(orphans)) {
    for (const r of part) {
      await OtaJobArchive.updateOne({ _id: r._id }, { $set: { status: r.status, error_msg: r.error_msg, finished_at: r.finished_at } });
    }
    const archived = await OtaJobArchive.find({ _id: { $in: part.map((r) => r._id) } }, { _id: 1 }).lean<Array<{ _id: string }>>();
    if (archived.length > 0) await Results.deleteMany({ _id: { $in: archived.map((a) => a._id) } });
  }
  return { moved, complete: ownDue.length < max && ended.length < max };
}

/** True when a bulk write failed only because some documents were inserted meanwhile by someone else. */
function onlyDuplicateKeys(err: unknown): boolean {
  const e = err as { code?: number; writeErrors?: Array<{ code?: number }> | { code?: number } };
  if (e.code === 11000 && !e.writeErrors) return true;
  const list = Array.isArray(e.writeErrors) ? e.writeErrors : e.writeErrors ? [e.writeErrors] : [];
  return list.length > 0 && list.every((w) => w.code === 11000);
}
