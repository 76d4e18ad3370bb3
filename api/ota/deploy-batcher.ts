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
// half-created; a batch document stored without its jobs is ended FAILED. A batch whose insert or start fails answers every one of its requests with an error (5xx).
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

/**
 * Starts the batch's workflow (never a second run for one id); an ambiguous failure is resolved by a lookup.
 * `fresh`: the caller stored these jobs just now and nothing can have ended one yet (the batcher, before any
 * request is answered): the run starts from their counts (OtaRolloutInput.storedJobs). The reconciler's late
 * starts pass false.
 */
export async function startBatchWorkflow(ctx: OtaContext, batchId: string, jobIds: readonly string[], fresh = false): Promise<void> {
  const workflowId = rolloutWorkflowId(batchId);
  try {
    await ctx.temporal.withDeadline(Date.now() + ctx.options.temporalTimeoutMs, () =>
      ctx.temporal.start(OTA_ROLLOUT_WORKFLOW, {
        taskQueue: ctx.cfg.temporal.taskQueue,
        workflowId,
        workflowIdReusePolicy: WorkflowIdReusePolicy.REJECT_DUPLICATE,
        args: [{ rolloutId: batchId, options: batchOptions(jobIds.length), ...(fresh ? { storedJobs: jobIds.length } : {}) }],
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
 * How long a batch that could go out waits at most for requests of its object still on their way (see expect).
 * Measured on the 200-deploy burst (16 requests in flight): without it batches alternated 13 / 3 jobs (the
 * requests answered by one commit came back while the next, small one was committing), and every batch costs
 * the batch workflow ~20 database statements whatever its size, so the small ones cost 4× as much per job.
 */
const JOIN_HOLD_MAX_MS = 250;

/**
 * Group commit per object: the first deploy opens a batch for `deployBatchWindowMs`; while a batch of the same
 * object is being committed, the next one keeps filling and goes out as soon as that commit ends (or once full),
 * so batches grow with the load instead of with a longer wait. A batch also waits (up to JOIN_HOLD_MAX_MS) while
 * requests for its object are still being checked (their lookups), since they will join it a moment later.
 */
export class DeployBatcher {
  private readonly open = new Map<string, Waiting[]>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  /** Batches being committed, per object. */
  private readonly committing = new Map<string, number>();
  /** Requests announced by expect() and not yet submitted (or given up), per object. */
  private readonly arriving = new Map<string, number>();
  /** Objects whose batch waits for expected requests (its timer is the hold's end). */
  private readonly held = new Set<string>();

  constructor(private readonly ctx: OtaContext) {}

  /**
   * Announces a deploy of `bucket`/`object` that is being checked and will probably be submitted; call the
   * returned function once it has been submitted or refused (extra calls are no-ops).
   */
  expect(bucket: string, object: string): () => void {
    const key = `${bucket}/${object}`;
    this.arriving.set(key, (this.arriving.get(key) ?? 0) + 1);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const left = (this.arriving.get(key) ?? 1) - 1;
      if (left > 0) {
        this.arriving.set(key, left);
        return;
      }
      this.arriving.delete(key);
      // The last one expected is in: a batch held for it goes now.
      if (this.held.has(key)) this.flush(key, false);
    };
  }

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
    this.held.delete(key);
    // Not full and a commit of this object in flight: its end sends this batch.
    if (!full && this.committing.has(key)) return;
    const waiting = this.open.get(key) ?? [];
    if (waiting.length === 0) {
      this.open.delete(key);
      return;
    }
    // Not full and requests of this object on their way: wait for them (expect's release, or the hold's end).
    if (!full && (this.arriving.get(key) ?? 0) > 0) {
      this.held.add(key);
      this.timers.set(key, setTimeout(() => this.flush(key, true), JOIN_HOLD_MAX_MS));
      return;
    }
    this.open.delete(key);
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
      // The jobs and the batch document are written side by side (measured: the commits of one object are serial,
      // and their round trips were most of the time the API took to accept a burst). A crash between the two
      // leaves either jobs without their document (the reconciler stores it and starts the batch) or a document
      // without jobs (the reconciler ends it FAILED): reconcileOrphanBatches.
      const [jobsStored, docStored] = await Promise.allSettled([
        ctx.models.OtaJob.insertMany(jobs, { ordered: true }),
        ctx.models.OtaRollout.create(batchDocument(batchId, jobs, jobs[0].timestamp)),
      ]);
      if (jobsStored.status === 'rejected' || docStored.status === 'rejected') {
        // Nothing half-stored: what made it goes again (the requests get an error).
        await Promise.all([
          ctx.models.OtaJob.deleteMany({ _id: { $in: ids } }).catch((err: unknown) => log.error({ err }, 'could not remove the jobs of a failed batch')),
          ctx.models.OtaRollout.deleteOne({ _id: batchId }).catch((err: unknown) => log.error({ err }, 'could not remove the document of a failed batch')),
        ]);
        throw jobsStored.status === 'rejected' ? jobsStored.reason : (docStored as PromiseRejectedResult).reason;
      }
      stored = true;
      log.info({ jobs: jobs.length }, 'deploy batch stored');
      await startBatchWorkflow(ctx, batchId, ids, true);
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
