// Creating deployment jobs, shared by POST /file/deploy and POST /file/deploy_from_s3: the job document is
// written first (PENDING, with everything the workflow needs), then its workflow is started. A job whose
// workflow could not be started is marked FAILED at once. These are two systems and no transaction: if the
// process dies between the insert and the start, or marking FAILED fails too, the job is left PENDING without a
// workflow. The job reconciler (reconciler.ts) finds such jobs once they are older than a grace period and
// starts their workflow; a cancel of one ends it CANCELED in the database (cancelOrphanJob).
import type { OtaJob } from '../../common/models/ota';
import { chunks } from '../../common/db';

export { buildJob, type JobSpec };
import { buildJob, type JobSpec } from '../../common/ota-job-doc';
import { isTemporalUnavailable, startDeploymentWorkflow } from './temporal';
import type { DeployBatcher } from './deploy-batcher';
import type { OtaContext } from './types';

export interface StartOutcome {
  jobId: string;
  /** null when the workflow runs. */
  error: string | null;
  unavailable: boolean;
}

/** Inserts job documents (chunks of 50); on failure removes the ones that made it and rethrows. */
export async function insertJobs(ctx: OtaContext, jobs: readonly OtaJob[]): Promise<void> {
  try {
    for (const part of chunks(jobs)) await ctx.models.OtaJob.insertMany(part, { ordered: true });
  } catch (e) {
    await ctx.models.OtaJob.deleteMany({ _id: { $in: jobs.map((j) => j._id) } }).catch((err: unknown) =>
      ctx.log.error({ err }, 'could not remove job documents of a failed deploy'),
    );
    throw e;
  }
}

/** `fn` over `items`, at most `limit` at a time; results in input order. */
export async function mapLimited<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/** Starts every job's workflow (8 at a time); the ones that fail are marked FAILED with the reason. */
export async function startJobs(ctx: OtaContext, jobs: readonly OtaJob[]): Promise<StartOutcome[]> {
  return mapLimited(jobs, 8, async (job): Promise<StartOutcome> => {
    try {
      const { s3_bucket, s3_object_name, deploy_path, sha256, size, mode } = job;
      await startDeploymentWorkflow(ctx, {
        jobId: job._id,
        robotId: job.robot_id,
        timeoutSeconds: job.timeout_s ?? null,
        // The dispatch builds the deploy message from these without reading the job again.
        job: { s3_bucket, s3_object_name, deploy_path, sha256, size, ...(typeof mode === 'number' ? { mode } : {}) },
      });
      return { jobId: job._id, error: null, unavailable: false };
    } catch (err) {
      const unavailable = isTemporalUnavailable(err);
      const error = `could not start the deployment workflow: ${unavailable ? 'Temporal unavailable' : err instanceof Error ? err.message : String(err)}`;
      ctx.log.error({ err, jobId: job._id }, 'workflow start failed; job marked FAILED');
      const now = new Date();
      await ctx.models.OtaJob.updateOne(
        { _id: job._id, status: 'PENDING' },
        { $set: { status: 'FAILED', error_msg: error, updated_at: now, finished_at: now } },
      ).catch((e: unknown) => ctx.log.error({ err: e, jobId: job._id }, 'could not mark the job FAILED'));
      return { jobId: job._id, error, unavailable };
    }
  });
}

/**
 * Stores `jobs` and hands them to Temporal: jobs without a timeout go through the batcher (group commit, one
 * batch workflow per batch, deploy-batcher.ts) when batching is on; the others (and all, when it is off) are
 * inserted and get one otaDeployment workflow each. Outcomes in input order; a job that could not be stored or
 * started has an error (and is FAILED or absent in the database).
 */
export async function createJobs(ctx: OtaContext, batcher: DeployBatcher, jobs: readonly OtaJob[]): Promise<StartOutcome[]> {
  const batched = (j: OtaJob) => ctx.options.deployBatching && (j.timeout_s === null || j.timeout_s === undefined);
  const own = jobs.filter((j) => !batched(j));
  const ownOutcomes = new Map<string, StartOutcome>();
  const [batchOutcomes] = await Promise.all([
    Promise.all(jobs.filter(batched).map((j) => batcher.submit(j))),
    (async () => {
      if (own.length === 0) return;
      await insertJobs(ctx, own);
      for (const o of await startJobs(ctx, own)) ownOutcomes.set(o.jobId, o);
    })(),
  ]);
  const byId = new Map([...batchOutcomes.map((o) => [o.jobId, o] as const), ...ownOutcomes]);
  return jobs.map((j) => byId.get(j._id)!);
}

/**
 * Cancels a PENDING job that has no running workflow (see the header) directly in the database: nothing else
 * would ever move it. Returns false when the job was no longer PENDING (something else moved it meanwhile).
 */
export async function cancelOrphanJob(ctx: OtaContext, jobId: string, reason: string): Promise<boolean> {
  const now = new Date();
  const res = await ctx.models.OtaJob.updateOne(
    { _id: jobId, status: 'PENDING' },
    // Same error_msg as the workflow writes for a cancel signal.
    { $set: { status: 'CANCELED', error_msg: `canceled: ${reason}`, updated_at: now, finished_at: now } },
  );
  return res.matchedCount === 1;
}
