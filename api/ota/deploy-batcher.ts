// Group commit of single deploys (POST /file/deploy, /file/deploy_from_s3). Measured on the 200-robot burst: one
// otaDeployment workflow per job costs ~27 history events and ~10 workflow tasks per job, and the dev server
// starts ~35 workflows/s, so a burst of 200 could not finish under ~10 s whatever else was cut. Here deploys of the
// same object that arrive within `deployBatchWindowMs` (or until `deployBatchMaxJobs`) become one batch:
//
//   jobs inserted with one insertMany → the batch document stored → ONE workflow started for the batch →
//   every request of the batch answered.
//
// The batch is driven by the rollout machinery (workflows/ota-rollout.ts with one wave, no thresholds): jobs are
// dispatched by one activity (one presigned URL, one signed message per robot), the MQTT bridge gathers the
// robots' reports per batch (workers/bridge/rollout-batcher.ts) into one signal, terminal states are stored in
// bulk, liveness resends in-flight jobs with a fresh URL (backoff), a job cancel is the rollout's per-job cancel,
// and the reconciler ends the jobs of a batch workflow terminated in Temporal Web. The batch id is
// `singles-<uuid>` (the jobs' deployment_id); its workflow id `ota-rollout-singles-<uuid>` is each job's
// `workflow_id` (job_state, /jobs), searchable in Temporal Web by DeploymentId, and its memo lists the job ids.
//
// Durability: a request is answered only once its job is stored and its batch workflow started. If the API dies
// in between, the stored jobs are PENDING with no workflow: the reconciler (reconcileOrphanBatches) stores the
// batch document if it is missing and starts the batch's workflow after its grace period, so no job is left
// half-created. A batch whose insert or start fails answers every one of its requests with an error (5xx).
import { randomUUID } from 'node:crypto';
import { WorkflowExecutionAlreadyStartedError, WorkflowIdReusePolicy } from '@temporalio/client';
import type { OtaJob } from '../../common/models/ota';
import { OTA_ROLLOUT_WORKFLOW, rolloutWorkflowId, type RolloutOptions, type RolloutStatus } from '../../workflows/ota-rollout-contract';
import { DEPLOYMENT_ID_SA } from '../../workflows/search-attributes';
import type { StartOutcome } from './jobs-service';
import { isTemporalUnavailable } from './temporal';
import type { OtaContext } from './types';
import { SINGLES_PREFIX } from '../../activities/db/ota-job-progress';

/** Batch ids (the jobs' deployment_id) start with SINGLES_PREFIX; real rollouts have bare uuids. */
export { isSinglesBatch, SINGLES_PREFIX } from '../../activities/db/ota-job-progress';

/** Liveness of a batch's jobs: the single path's first wait for a report (then doubled per silent resend). */
const REDISPATCH_AFTER_MS = 60_000;

/** The batch workflow's options: one wave, every job at once, no thresholds (each job stands on its own). */
export function batchOptions(jobs: number): RolloutOptions {
  return {
    wavePercents: [100],
    successThresholdPct: 0,
    maxConcurrency: Math.max(1, jobs),
    abortAfterFailures: null,
    abortAfterFailurePct: null,
    deadlineMs: null,
    redispatchAfterMs: REDISPATCH_AFTER_MS,
  };
}

/** The batch document the rollout activities read (dispatch cursor, wave sizes); no robot list: the jobs exist. */
export function batchDocument(batchId: string, jobs: readonly OtaJob[], now: Date) {
  const first = jobs[0];
  return {
    _id: batchId,
    s3_bucket: first.s3_bucket,
    s3_object_name: first.s3_object_name,
    file_name: first.file_name,
    sha256: first.sha256,
    size: first.size,
    deploy_path: first.deploy_path,
    robot_ids: [] as string[],
    wave_sizes: [jobs.length],
    options: batchOptions(jobs.length),
    status: 'RUNNING' satisfies RolloutStatus,
    paused: false,
    current_wave: 0,
    reason: null,
    created_by: null,
    timestamp: now,
    updated_at: now,
    finished_at: null,
    workflow_id: rolloutWorkflowId(batchId),
  };
}

/** Starts the batch's workflow (never a second run for one id); an ambiguous failure is resolved by a lookup. */
export async function startBatchWorkflow(ctx: OtaContext, batchId: string, jobIds: readonly string[]): Promise<void> {
  const workflowId = rolloutWorkflowId(batchId);
  try {
    await ctx.temporal.withDeadline(Date.now() + ctx.options.temporalTimeoutMs, () =>
      ctx.temporal.start(OTA_ROLLOUT_WORKFLOW, {
        taskQueue: ctx.cfg.temporal.taskQueue,
        workflowId,
        workflowIdReusePolicy: WorkflowIdReusePolicy.REJECT_DUPLICATE,
        args: [{ rolloutId: batchId, options: batchOptions(jobIds.length) }],
        typedSearchAttributes: [{ key: DEPLOYMENT_ID_SA, value: batchId }],
        // Operators find a job's run from its id: Temporal Web shows the memo (ids only, ≤ 50 of them).
        memo: { jobIds: [...jobIds] },
      }),
    );
  } catch (e) {
    if (e instanceof WorkflowExecutionAlreadyStartedError) return;
    const exists = await ctx.temporal
      .withDeadline(Date.now() + ctx.options.temporalTimeoutMs, () => ctx.temporal.getHandle(workflowId).describe())
      .then(() => true, () => false);
    if (!exists) throw e;
  }
}

interface Waiting {
  job: OtaJob;
  resolve: (o: StartOutcome) => void;
}

/**
 * Group commit per object: the first deploy opens a batch for `deployBatchWindowMs`; while a batch of the same
 * object is being committed, the next one keeps filling and goes out as soon as that commit ends (or once full),
 * so batches grow with the load instead of with a longer wait.
 */
export class DeployBatcher {
  private readonly open = new Map<string, Waiting[]>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  /** Batches being committed, per object. */
  private readonly committing = new Map<string, number>();

  constructor(private readonly ctx: OtaContext) {}

  /** Stores `job` in the next batch of its object and starts that batch; resolves once both are done (or failed). */
  submit(job: OtaJob): Promise<StartOutcome> {
    return new Promise((resolve) => {
      // One batch per object: the batch document names one file (a rollout's shape).
      const key = `${job.s3_bucket}/${job.s3_object_name}`;
      const waiting = this.open.get(key) ?? [];
      waiting.push({ job, resolve });
      this.open.set(key, waiting);
      if (waiting.length >= this.ctx.options.deployBatchMaxJobs) this.flush(key, true);
      else if (!this.timers.has(key) && !this.committing.has(key)) {
        this.timers.set(key, setTimeout(() => this.flush(key, false), this.ctx.options.deployBatchWindowMs));
      }
    });
  }

  private flush(key: string, full: boolean): void {
    const timer = this.timers.get(key);
    if (timer) clearTimeout(timer);
    this.timers.delete(key);
    // Not full and a commit of this object in flight: its end sends this batch.
    if (!full && this.committing.has(key)) return;
    const waiting = this.open.get(key) ?? [];
    this.open.delete(key);
    if (waiting.length === 0) return;
    this.committing.set(key, (this.committing.get(key) ?? 0) + 1);
    void this.commit(waiting).finally(() => {
      const left = (this.committing.get(key) ?? 1) - 1;
      if (left > 0) this.committing.set(key, left);
      else this.committing.delete(key);
      if (this.open.has(key)) this.flush(key, false);
    });
  }

  private async commit(waiting: readonly Waiting[]): Promise<void> {
    const { ctx } = this;
    const batchId = `${SINGLES_PREFIX}${randomUUID()}`;
    const workflowId = rolloutWorkflowId(batchId);
    const jobs = waiting.map((w, seq): OtaJob => ({ ...w.job, deployment_id: batchId, workflow_id: workflowId, wave: 0, seq, dispatch_state: 'queued' }));
    const ids = jobs.map((j) => j._id);
    const log = ctx.log.child({ batchId });
    let stored = false;
    try {
      // Info: the API crash test waits for this line before it kills the API with a batch being accepted.
      log.info({ jobs: jobs.length }, 'deploy batch storing');
      try {
        await ctx.models.OtaJob.insertMany(jobs, { ordered: true });
      } catch (e) {
        // Nothing half-stored: the documents that made it go again (the requests get an error).
        await ctx.models.OtaJob.deleteMany({ _id: { $in: ids } }).catch((err: unknown) => log.error({ err }, 'could not remove the jobs of a failed batch'));
        throw e;
      }
      stored = true;
      await ctx.models.OtaRollout.create(batchDocument(batchId, jobs, jobs[0].timestamp));
      log.info({ jobs: jobs.length }, 'deploy batch stored');
      await startBatchWorkflow(ctx, batchId, ids);
      log.info({ jobs: jobs.length, workflowId }, 'deploy batch started');
      for (const w of waiting) w.resolve({ jobId: w.job._id, error: null, unavailable: false });
    } catch (err) {
      const unavailable = isTemporalUnavailable(err);
      const error = `could not start the deployment workflow: ${unavailable ? 'Temporal unavailable' : err instanceof Error ? err.message : String(err)}`;
      log.error({ err, jobs: ids.length }, 'deploy batch failed; its jobs are marked FAILED');
      if (stored) {
        const now = new Date();
        // Guarded: only jobs nothing has moved; a batch doc left RUNNING would hold the archiver back.
        await ctx.models.OtaJob.updateMany(
          { _id: { $in: ids }, status: 'PENDING' },
          { $set: { status: 'FAILED', error_msg: error, updated_at: now, finished_at: now } },
        ).catch((e: unknown) => log.error({ err: e }, 'could not mark the batch jobs FAILED'));
        await ctx.models.OtaRollout.updateOne({ _id: batchId }, { $set: { status: 'FAILED', reason: error, updated_at: now, finished_at: now } }).catch(() => undefined);
      }
      for (const w of waiting) w.resolve({ jobId: w.job._id, error, unavailable });
    }
  }
}
