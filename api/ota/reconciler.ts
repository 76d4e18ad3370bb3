// The job reconciler: starts the workflow of PENDING jobs that have none. A deploy request inserts the job and
// then starts its workflow (jobs-service.ts); if the API process dies in between, or marking a failed start
// FAILED fails as well, the job stays PENDING with nothing to drive it. The reconciler runs in the API process,
// once at start and then every `reconcileIntervalMs`: it reads PENDING jobs older than `reconcileGraceMs` (the
// creating request is given time to start the workflow itself) in chunks of 50, asks Temporal's visibility which
// of their workflows exist, and starts the missing ones with the job's own workflow id. Starting is idempotent
// (WorkflowExecutionAlreadyStarted is "exists") and never adds a run after a closed one (REJECT_DUPLICATE), so
// several API processes, visibility lag, or a job whose workflow was terminated cannot deliver a job twice.
// Each pass looks at `reconcileMaxJobsPerPass` jobs at most; the next pass continues after the last one.
// Batched single deploys (deploy-batcher.ts) stored without their batch's workflow get it the same way, per batch
// (reconcileOrphanBatches).
import type { FilterQuery } from 'mongoose';
import type { OtaJob } from '../../common/models/ota';
import { isTerminal, JOB_STATUSES } from '../../common/protocol';
import { chunks } from '../../common/db';
import { otaWorkflowId } from '../../workflows/ota-contract';
import { mapLimited } from './jobs-service';
import { batchDocument, SINGLES_PREFIX, startBatchWorkflow } from './deploy-batcher';
import { rolloutWorkflowId } from '../../workflows/ota-rollout-contract';
import { archiveFinishedJobs, type ArchivePass } from './archiver';
import { findJob } from '../../activities/db/ota-jobs';
import { endOpenRolloutJobs, finishedRolloutIds } from '../../activities/db/ota-rollout-results';
import { existingWorkflowIds, isTemporalUnavailable, signalCancel, startDeploymentWorkflow, type StartResult } from './temporal';
import { resolveContext, type OtaAppDeps, type OtaContext } from './types';

/** FerretDB: reads and writes in chunks of at most 50 documents; also the size of one visibility query. */
const CHUNK = 50;
const START_CONCURRENCY = 8;

export type OrphanCandidate = Pick<OtaJob, '_id' | 'robot_id' | 'timestamp' | 'timeout_s'>;

/** Non-terminal statuses: a job in one of them is still owed a terminal status by its workflow. */
const OPEN_STATUSES = JOB_STATUSES.filter((st) => !isTerminal(st));

export interface ClosedPass {
  /** Jobs ended here because their workflow was closed without deciding them (e.g. terminated from Temporal Web). */
  ended: string[];
}

/**
 * Ends the open jobs whose workflow is closed (terminated from Temporal Web, failed, timed out) and has no run
 * left: nothing would ever move them. Looks at open jobs not updated for `reconcileGraceMs`, 50 workflow ids per
 * visibility query; a workflow id with a Running run (continue-as-new included) is left alone. A terminated or
 * canceled workflow ends its jobs CANCELED, a failed or timed-out one FAILED; the write is guarded (only an open
 * job moves), and a rollout whose workflow is gone is marked the same way.
 */
export async function reconcileClosedWorkflows(ctx: OtaContext, nowMs = Date.now()): Promise<ClosedPass> {
  const cutoff = new Date(nowMs - ctx.options.reconcileGraceMs);
  // A finished rollout's jobs have all ended (result rows; their documents still say PENDING): not looked at.
  const settled = await finishedRolloutIds(ctx.models, ctx.cfg.mongo.timeoutMs);
  const open = { status: { $in: OPEN_STATUSES }, updated_at: { $lt: cutoff }, ...(settled.length > 0 ? { deployment_id: { $nin: settled } } : {}) };
  const jobs = await ctx.models.OtaJob.find(open, { _id: 1, workflow_id: 1, deployment_id: 1 })
    .limit(Math.max(1, ctx.options.reconcileMaxJobsPerPass))
    .lean<Array<Pick<OtaJob, '_id' | 'workflow_id' | 'deployment_id'>>>();
  const out: ClosedPass = { ended: [] };
  const workflowIds = [...new Set(jobs.map((j) => j.workflow_id))];
  for (const part of chunks(workflowIds, CHUNK)) {
    const runs = await workflowRuns(ctx, part);
    for (const [workflowId, statuses] of runs) {
      if (statuses.latest === 'RUNNING' || statuses.anyRunning) continue;
      const status = statuses.latest === 'TERMINATED' || statuses.latest === 'CANCELLED' ? 'CANCELED' : statuses.latest === 'FAILED' || statuses.latest === 'TIMED_OUT' ? 'FAILED' : null;
      if (!status) continue; // COMPLETED / CONTINUED_AS_NEW without a successor: left for a human to look at
      const reason = `workflow ${statuses.latest.toLowerCase()} in Temporal before deciding the job`;
      const now = new Date();
      const rollout = jobs.find((j) => j.workflow_id === workflowId && j.deployment_id)?.deployment_id;
      // A rollout's jobs end as result rows, all of them at once (its document is then marked finished).
      const ids = rollout ? await endOpenRolloutJobs(ctx.models, rollout, status, reason, ctx.cfg.mongo.timeoutMs) : jobs.filter((j) => j.workflow_id === workflowId).map((j) => j._id);
      for (const idsPart of chunks(rollout ? [] : ids, CHUNK)) {
        await ctx.models.OtaJob.updateMany(
          { _id: { $in: idsPart }, status: { $in: OPEN_STATUSES } },
          { $set: { status, error_msg: reason, updated_at: now, finished_at: now }, $push: { transitions: { status, error_msg: reason, at: now } } },
        );
      }
      if (rollout) {
        await ctx.models.OtaRollout.updateOne(
          { _id: rollout, status: { $in: ['RUNNING', 'PAUSED'] } },
          { $set: { status: status === 'CANCELED' ? 'CANCELED' : 'FAILED', reason, updated_at: now, finished_at: now } },
        );
      }
      out.ended.push(...ids);
      ctx.log.warn({ workflowId, temporalStatus: statuses.latest, jobs: ids.length, status }, 'jobs of a closed workflow ended');
    }
  }
  return out;
}

/** Per workflow id: the status of its latest run, and whether any run is still running (visibility). */
async function workflowRuns(ctx: OtaContext, workflowIds: readonly string[]): Promise<Map<string, { latest: string; anyRunning: boolean; startMs: number }>> {
  const out = new Map<string, { latest: string; anyRunning: boolean; startMs: number }>();
  if (workflowIds.length === 0) return out;
  const query = `WorkflowId IN (${workflowIds.map((id) => JSON.stringify(id)).join(', ')})`;
  await ctx.temporal.withDeadline(Date.now() + ctx.options.temporalTimeoutMs, async () => {
    for await (const wf of ctx.temporal.list({ query, pageSize: 200 })) {
      const startMs = wf.startTime.getTime();
      const cur = out.get(wf.workflowId);
      const running = wf.status.name === 'RUNNING';
      if (!cur) out.set(wf.workflowId, { latest: wf.status.name, anyRunning: running, startMs });
      else {
        cur.anyRunning ||= running;
        if (startMs >= cur.startMs) Object.assign(cur, { latest: wf.status.name, startMs });
      }
    }
  });
  return out;
}

export interface BatchPass {
  /** Batches (deploy-batcher.ts) whose workflow this pass started. */
  started: string[];
  /** Batch documents stored without jobs, ended FAILED by this pass. */
  emptied: string[];
}

/**
 * Starts the workflow of batches of single deploys whose jobs were stored but whose workflow never started (the
 * API died between the two; deploy-batcher.ts): PENDING batch jobs older than `reconcileGraceMs`, grouped by
 * batch, 50 workflow ids per visibility query. A batch document missing too (the API died right after the
 * insert) is stored first, from the jobs. Starting is idempotent (one workflow id per batch, REJECT_DUPLICATE).
 */
export async function reconcileOrphanBatches(ctx: OtaContext, nowMs = Date.now()): Promise<BatchPass> {
  const cutoff = new Date(nowMs - ctx.options.reconcileGraceMs);
  const jobs = await ctx.models.OtaJob.find(
    { status: 'PENDING', timestamp: { $lt: cutoff }, deployment_id: { $regex: `^${SINGLES_PREFIX}` } },
    { _id: 1, deployment_id: 1 },
  )
    .limit(Math.max(1, ctx.options.reconcileMaxJobsPerPass))
    .lean<Array<Pick<OtaJob, '_id' | 'deployment_id'>>>();
  const batchIds = [...new Set(jobs.map((j) => j.deployment_id as string))];
  const out: BatchPass = { started: [], emptied: [] };
  for (const part of chunks(batchIds, CHUNK)) {
    const existing = await existingWorkflowIds(ctx, part.map(rolloutWorkflowId));
    for (const batchId of part.filter((b) => !existing.has(rolloutWorkflowId(b)))) {
      const batch = await ctx.models.OtaJob.find({ deployment_id: batchId }).sort({ seq: 1 }).lean<OtaJob[]>();
      if (batch.length === 0) continue;
      if (!(await ctx.models.OtaRollout.exists({ _id: batchId }))) {
        await ctx.models.OtaRollout.create(batchDocument(batchId, batch, batch[0].timestamp)).catch((err: unknown) => {
          if ((err as { code?: number }).code !== 11000) throw err; // another API process stored it meanwhile
        });
      }
      await startBatchWorkflow(ctx, batchId, batch.map((j) => j._id));
      ctx.log.warn({ batchId, jobs: batch.length }, 'batch of PENDING jobs had no workflow; started it');
      out.started.push(batchId);
    }
  }
  out.emptied = await endEmptyBatches(ctx, cutoff);
  return out;
}

/**
 * Batch documents stored without their jobs (the API died between the two writes of a batch, which go side by side:
 * deploy-batcher.ts) and without a workflow: nothing was acknowledged for them, so they end FAILED (a RUNNING
 * batch with nothing in it would show as running for ever). Returns their ids.
 */
async function endEmptyBatches(ctx: OtaContext, cutoff: Date): Promise<string[]> {
  const docs = await ctx.models.OtaRollout.find({ status: 'RUNNING', timestamp: { $lt: cutoff }, _id: { $regex: `^${SINGLES_PREFIX}` } }, { _id: 1 })
    .limit(Math.max(1, ctx.options.reconcileMaxJobsPerPass))
    .lean<Array<{ _id: string }>>();
  const ended: string[] = [];
  for (const part of chunks(docs.map((d) => d._id), CHUNK)) {
    const existing = await existingWorkflowIds(ctx, part.map(rolloutWorkflowId));
    const candidates = part.filter((b) => !existing.has(rolloutWorkflowId(b)));
    if (candidates.length === 0) continue;
    // A find, not distinct: FerretDB's distinct refuses maxTimeMS, which every query here carries.
    const rows = await ctx.models.OtaJob.find({ deployment_id: { $in: candidates } }, { deployment_id: 1 }).lean<Array<Pick<OtaJob, 'deployment_id'>>>();
    const withJobs = new Set(rows.map((r) => r.deployment_id));
    const empty = candidates.filter((b) => !withJobs.has(b));
    if (empty.length === 0) continue;
    const now = new Date();
    const reason = 'no job of this batch was stored (the API stopped while accepting it); nothing was acknowledged';
    await ctx.models.OtaRollout.updateMany({ _id: { $in: empty }, status: 'RUNNING' }, { $set: { status: 'FAILED', reason, updated_at: now, finished_at: now } });
    ctx.log.warn({ batches: empty }, 'batch documents without jobs or workflow ended FAILED');
    ended.push(...empty);
  }
  return ended;
}

export interface ReconcilePass {
  /** PENDING jobs past the grace period looked at in this pass. */
  scanned: number;
  /** Job ids whose workflow this pass started. */
  started: string[];
  /** Starts that failed (logged; retried by a later pass). */
  errors: number;
  /** False when the pass stopped early (cap reached, Temporal unavailable); the next one continues. */
  complete: boolean;
}

interface Cursor {
  t: Date;
  id: string;
}

/** A job's timeout counts from its creation: the time already lost while orphaned is taken off (at least 1 s). */
export function secondsLeft(job: Pick<OtaJob, 'timestamp' | 'timeout_s'>, nowMs: number): number | null {
  if (job.timeout_s === null || job.timeout_s === undefined) return null;
  const elapsed = (nowMs - new Date(job.timestamp).getTime()) / 1000;
  return Math.max(1, Math.ceil(job.timeout_s - elapsed));
}

/**
 * Starts the workflow of one job read as PENDING. If this call started it, the job is read again: a cancel
 * (POST /job/{id}/cancel ends a PENDING job without a workflow in the database) may have landed between the
 * read and the start, and the new run is then told to cancel before it delivers anything.
 */
export async function startOrphanWorkflow(ctx: OtaContext, job: OrphanCandidate, nowMs = Date.now()): Promise<StartResult> {
  const result = await startDeploymentWorkflow(ctx, { jobId: job._id, robotId: job.robot_id, timeoutSeconds: secondsLeft(job, nowMs) });
  if (result !== 'started') return result;
  ctx.log.warn({ jobId: job._id, createdAt: job.timestamp }, 'PENDING job had no workflow; started it');
  const current = await findJob(ctx.models, job._id);
  if (!current || isTerminal(current.status)) {
    ctx.log.warn({ jobId: job._id, status: current?.status ?? null }, 'job ended while its workflow was being started; canceling the run');
    await signalCancel(ctx, otaWorkflowId(job._id), 'the job ended before its workflow started');
  }
  return result;
}

export class JobReconciler {
  private readonly ctx: OtaContext;
  private cursor: Cursor | null = null;
  private timer: NodeJS.Timeout | null = null;
  private archiveTimer: NodeJS.Timeout | null = null;
  /** Passes run one after the other: the last one queued (settled or not). */
  private queue: Promise<unknown> = Promise.resolve();
  private stopped = false;

  constructor(deps: OtaAppDeps) {
    const ctx = resolveContext(deps);
    this.ctx = { ...ctx, log: ctx.log.child({ component: 'job-reconciler' }) };
  }

  /** One pass now (after the one in flight, if any). */
  runOnce(): Promise<ReconcilePass> {
    const p = this.queue.then(() => this.pass());
    this.queue = p.catch(() => undefined);
    return p;
  }

  /** One closed-workflow pass now (reconcileClosedWorkflows), after the pass in flight. */
  closedOnce(): Promise<ClosedPass> {
    const p = this.queue.then(() => reconcileClosedWorkflows(this.ctx));
    this.queue = p.catch(() => undefined);
    return p;
  }

  /** One orphan-batch pass now (reconcileOrphanBatches), after the pass in flight. */
  batchesOnce(): Promise<BatchPass> {
    const p = this.queue.then(() => reconcileOrphanBatches(this.ctx));
    this.queue = p.catch(() => undefined);
    return p;
  }

  /** One archive pass now (archiveFinishedJobs), after the pass in flight. */
  archiveOnce(): Promise<ArchivePass> {
    const p = this.queue.then(() => archiveFinishedJobs(this.ctx));
    this.queue = p.catch(() => undefined);
    return p;
  }

  /**
   * A pass right away, then one every reconcileIntervalMs (counted from the end of the previous one); archive
   * passes on their own, shorter period (archiveIntervalMs), so the live job collection stays small.
   */
  start(): void {
    if (this.timer || this.stopped) return;
    if (this.ctx.options.archiveIntervalMs > 0) {
      const archive = async () => {
        try {
          const r = await this.archiveOnce();
          if (r.moved > 0) this.ctx.log.info(r, 'job archiver pass');
        } catch (err) {
          this.ctx.log.error({ err }, 'job archiver pass failed');
        }
        if (!this.stopped) {
          this.archiveTimer = setTimeout(() => void archive(), this.ctx.options.archiveIntervalMs);
          this.archiveTimer.unref();
        }
      };
      this.archiveTimer = setTimeout(() => void archive(), this.ctx.options.archiveIntervalMs);
      this.archiveTimer.unref();
    }
    const tick = async () => {
      try {
        const r = await this.runOnce();
        if (r.started.length > 0 || r.errors > 0 || !r.complete) this.ctx.log.info(r, 'job reconciler pass');
      } catch (err) {
        this.ctx.log.error({ err }, 'job reconciler pass failed');
      }
      try {
        const batches = await this.batchesOnce();
        if (batches.started.length > 0) this.ctx.log.info({ started: batches.started.length }, 'job reconciler: batches without a workflow started');
      } catch (err) {
        this.ctx.log.error({ err }, 'job reconciler: orphan-batch pass failed');
      }
      try {
        const closed = await this.closedOnce();
        if (closed.ended.length > 0) this.ctx.log.info({ ended: closed.ended.length }, 'job reconciler: jobs of closed workflows ended');
      } catch (err) {
        this.ctx.log.error({ err }, 'job reconciler: closed-workflow pass failed');
      }
      if (!this.stopped) this.schedule(tick, this.ctx.options.reconcileIntervalMs);
    };
    this.schedule(tick, 0);
  }

  /** No further passes; resolves once the pass in flight (if any) has ended. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.archiveTimer) clearTimeout(this.archiveTimer);
    this.timer = null;
    this.archiveTimer = null;
    await this.queue;
  }

  private schedule(fn: () => Promise<void>, ms: number): void {
    this.timer = setTimeout(() => void fn(), ms);
    this.timer.unref(); // never what keeps the process alive
  }

  private async pass(): Promise<ReconcilePass> {
    const { ctx } = this;
    const cutoff = new Date(Date.now() - ctx.options.reconcileGraceMs);
    const max = Math.max(1, ctx.options.reconcileMaxJobsPerPass);
    const out: ReconcilePass = { scanned: 0, started: [], errors: 0, complete: false };
    while (out.scanned < max) {
      // Rollout jobs wait PENDING for their turn by design: their rollout's workflow drives them, not one of their own.
      const filter: FilterQuery<OtaJob> = { status: 'PENDING', timestamp: { $lt: cutoff }, deployment_id: null };
      const from = this.cursor;
      if (from) filter.$or = [{ timestamp: { $gt: from.t } }, { timestamp: from.t, _id: { $gt: from.id } }];
      const limit = Math.min(CHUNK, max - out.scanned);
      const page = await ctx.models.OtaJob.find(filter, { _id: 1, robot_id: 1, timestamp: 1, timeout_s: 1 })
        .sort({ timestamp: 1, _id: 1 })
        .limit(limit)
        .lean<OrphanCandidate[]>();
      out.scanned += page.length;
      const last = page[page.length - 1];
      this.cursor = last ? { t: new Date(last.timestamp), id: last._id } : null;

      const existing = await existingWorkflowIds(ctx, page.map((j) => otaWorkflowId(j._id))).catch((err: unknown) => {
        // Without visibility every start is attempted; each is idempotent.
        ctx.log.warn({ err }, 'visibility query failed; trying every start');
        return new Set<string>();
      });
      let unavailable = false;
      await mapLimited(
        page.filter((j) => !existing.has(otaWorkflowId(j._id))),
        START_CONCURRENCY,
        async (job) => {
          if (unavailable) return;
          try {
            if ((await startOrphanWorkflow(ctx, job)) === 'started') out.started.push(job._id);
          } catch (err) {
            out.errors++;
            unavailable ||= isTemporalUnavailable(err);
            ctx.log.error({ err, jobId: job._id }, 'could not start the workflow of a PENDING job; retried next pass');
          }
        },
      );
      if (unavailable) {
        this.cursor = from; // this chunk again next time
        return out;
      }
      if (page.length < limit) {
        this.cursor = null; // the end: the next pass starts from the oldest job again
        out.complete = true;
        return out;
      }
    }
    return out;
  }
}
