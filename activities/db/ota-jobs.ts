// OTA job persistence for the otaDeployment workflow. The workflow calls this for status *transitions* (not
// progress ticks: live progress stays in workflow state and is read with the jobProgress query); transitions
// decided together are stored in one call, each appended to the job's `transitions` history.
// Every write is guarded by the status order (workflows/ota-status.ts): a retried activity, a replayed workflow
// or a stale caller can repeat or lag, but can never move a job backwards or out of a terminal status.
import type { JobStatus } from '../../common/protocol';
import type { OtaJob, OtaModels } from '../../common/models/ota';
import { isTerminalStatus, statusesBefore } from '../../workflows/ota-status';
import { DEFAULT_DB_TIMEOUT_MS, withDbTimeout } from './timeout';
import { overlayRolloutResult } from './ota-rollout-results';
import { overlayJobProgress } from './ota-job-progress';

export interface OtaJobActivityDeps {
  models: Pick<OtaModels, 'OtaJob' | 'OtaJobArchive' | 'DeployTarget' | 'OtaRolloutResult'>;
  /** Client-side deadline per database operation (the models also send maxTimeMS). */
  dbTimeoutMs?: number;
}

export interface RecordJobStatusResult {
  /** True when the job now holds `status` (written now, or already there from an earlier attempt). */
  applied: boolean;
  /** The job's status in the database after the call; null when the job does not exist. */
  current: JobStatus | null;
}

/**
 * Job `jobId` wherever it is stored: the live collection first (a live rollout job with its result row applied),
 * then the archive, where the API's archiver moves jobs some time after they ended (api/ota/archiver.ts). Live
 * first: while a job is being moved it is in both for a moment, and the live copy is the newer one.
 */
export async function findJob(
  models: Pick<OtaModels, 'OtaJob' | 'OtaJobArchive' | 'OtaRolloutResult'> & Partial<Pick<OtaModels, 'OtaJobProgressRow'>>,
  jobId: string,
  dbTimeoutMs = DEFAULT_DB_TIMEOUT_MS,
): Promise<OtaJob | null> {
  const live = await withDbTimeout('load job', dbTimeoutMs, models.OtaJob.findById(jobId).lean<OtaJob>());
  // A live rollout job's end is a row of its own (activities/db/ota-rollout-results.ts), read only for those;
  // a batched single job still open may have progress rows (RECEIVED, DOWNLOADING: activities/db/ota-job-progress.ts).
  if (live) {
    const job = await overlayRolloutResult(models.OtaRolloutResult, live, dbTimeoutMs);
    if (!job || !models.OtaJobProgressRow) return job;
    return (await overlayJobProgress(models.OtaJobProgressRow, [job], dbTimeoutMs))[0];
  }
  return withDbTimeout('load archived job', dbTimeoutMs, models.OtaJobArchive.findById(jobId).lean<OtaJob>());
}

export const deployTargetId = (robotId: string, deployPath: string): string => `${robotId}:${deployPath}`;

/** Records that job `jobId`'s file now sits at its robot's path (the cloud's view of the robot, `deploy_state`). */
export async function upsertDeployTarget(models: OtaJobActivityDeps['models'], jobId: string, dbTimeoutMs = DEFAULT_DB_TIMEOUT_MS): Promise<void> {
  const job = await findJob(models, jobId, dbTimeoutMs);
  if (job) await upsertDeployTargetOf(models, job, dbTimeoutMs);
}

/** upsertDeployTarget for a job document already read. */
async function upsertDeployTargetOf(
  models: OtaJobActivityDeps['models'],
  job: Pick<OtaJob, '_id' | 'robot_id' | 'deploy_path' | 's3_bucket' | 's3_object_name' | 'sha256'>,
  dbTimeoutMs: number,
): Promise<void> {
  const { DeployTarget } = models;
  const jobId = job._id;
  const now = new Date();
  await withDbTimeout(
    'upsert deploy target',
    dbTimeoutMs,
    DeployTarget.updateOne(
      { _id: deployTargetId(job.robot_id, job.deploy_path) },
      {
        $set: {
          robot_id: job.robot_id,
          deploy_path: job.deploy_path,
          s3_bucket: job.s3_bucket,
          s3_object_name: job.s3_object_name,
          sha256: job.sha256,
          job_id: jobId,
          updated_at: now,
        },
        $setOnInsert: { version: 'v1' },
      },
      { upsert: true },
    ),
  );
}

/**
 * Moves job `jobId` to `status` if that is a forward transition; idempotent (repeating the last write is a no-op
 * that still reports `applied`). On COMPLETED it also records what now sits at the robot's path. One guarded
 * find-and-update: it answers with the stored job, so the deploy target needs no second read of the job.
 */
export async function recordStatus(
  models: OtaJobActivityDeps['models'],
  jobId: string,
  status: JobStatus,
  error_msg: string | null,
  /** Statuses the job passed through since the last write (decided together, stored in this one write). */
  passedThrough: JobStatus[] = [],
  dbTimeoutMs = DEFAULT_DB_TIMEOUT_MS,
): Promise<RecordJobStatusResult> {
  const { OtaJob } = models;
  const now = new Date();
  // Every state change lands in `transitions`, in order; the guard on `status` makes a retried write a no-op,
  // so nothing is appended twice.
  const transitions = [...passedThrough.map((s) => ({ status: s, error_msg: null, at: now })), { status, error_msg, at: now }];
  const updated = await withDbTimeout(
    'record job status',
    dbTimeoutMs,
    OtaJob.findOneAndUpdate(
      { _id: jobId, status: { $in: statusesBefore(status) } },
      {
        $set: { status, error_msg, updated_at: now, ...(isTerminalStatus(status) ? { finished_at: now } : {}) },
        $push: { transitions: { $each: transitions } },
      },
      { new: true }, // no projection: FerretDB's findAndModify does not implement "fields"
    ).lean(),
  );
  let current: JobStatus | null = status;
  if (!updated) {
    // Not moved: already there (a retried write, maybe after the job was archived) or not a forward move.
    const job = await findJob(models, jobId, dbTimeoutMs);
    current = job ? (job.status as JobStatus) : null;
  }
  const applied = current === status;
  // Also on a repeat: an earlier attempt may have stored COMPLETED and then failed before this upsert.
  if (applied && status === 'COMPLETED') {
    if (updated) await upsertDeployTargetOf(models, updated, dbTimeoutMs);
    else await upsertDeployTarget(models, jobId, dbTimeoutMs);
  }
  return { applied, current };
}

export function createOtaJobActivities({ models, dbTimeoutMs = DEFAULT_DB_TIMEOUT_MS }: OtaJobActivityDeps) {
  return {
    /** See recordStatus. */
    async recordJobStatus(
      jobId: string,
      status: JobStatus,
      error_msg: string | null,
      passedThrough: JobStatus[] = [],
    ): Promise<RecordJobStatusResult> {
      return recordStatus(models, jobId, status, error_msg, passedThrough, dbTimeoutMs);
    },
  };
}

export type OtaJobActivities = ReturnType<typeof createOtaJobActivities>;
