// Job endpoints: the reference's GET /job_state/{id} and GET /deploy_state/{robot}, plus ours: a paginated job
// list and cancel. Job documents are the record; the workflow adds live progress while a job runs.
import express, { Router } from 'express';
import type { FilterQuery } from 'mongoose';
import type { DeployTarget, OtaJob } from '../../../common/models/ota';
import { isTerminal } from '../../../common/protocol';
import { authContext, requireRole, robotScopeProblem } from '../../auth';
import { HttpError } from '../errors';
import { parseParams } from '../http';
import { cancelBodySchema, jobIdParamSchema, jobsQuerySchema, robotIdParamSchema } from '../schemas';
import { cancelOrphanJob } from '../jobs-service';
import { isSinglesBatch } from '../deploy-batcher';
import { isTemporalUnavailable, queryJobProgress, signalCancel, signalWorkflow, type CancelOutcome } from '../temporal';
import { cancelRolloutJobsSignal } from '../../../workflows/ota-rollout-contract';
import type { OtaContext } from '../types';
import { findJob } from '../../../activities/db/ota-jobs';
import { liveJobsPageWithProgress } from '../../../activities/db/ota-job-progress';
import { deployTargetRow, jobState } from '../views';

const JOB_NOT_FOUND = 'Job not found';

/** Keyset cursor: the (timestamp, id) of the last job of a page; stable while new jobs arrive. */
interface Cursor {
  t: number;
  id: string;
}

export const encodeCursor = (c: Cursor): string => Buffer.from(JSON.stringify(c)).toString('base64url');

export function decodeCursor(raw: string): Cursor {
  try {
    const c = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8')) as Partial<Cursor>;
    if (typeof c.t === 'number' && Number.isFinite(c.t) && typeof c.id === 'string') return { t: c.t, id: c.id };
  } catch {
    // fall through
  }
  throw new HttpError(400, 'cursor: invalid (use next_cursor from the previous page)');
}

export function jobsRouter(ctx: OtaContext): Router {
  const r = Router();

  r.get('/job_state/:job_id', requireRole('viewer'), async (req, res) => {
    const { job_id } = parseParams(jobIdParamSchema, req.params);
    const job = await findJob(ctx.models, job_id);
    if (!job) throw new HttpError(404, JOB_NOT_FOUND);
    // A rollout job's workflow is its rollout's: the database is its record (no per-job progress query).
    const live = isTerminal(job.status) || job.deployment_id ? null : await queryJobProgress(ctx, job.workflow_id);
    res.json(jobState(job, live));
  });

  r.get('/jobs', requireRole('viewer'), async (req, res) => {
    const q = parseParams(jobsQuerySchema, req.query);
    const filter: FilterQuery<OtaJob> = {};
    if (q.robot_id !== undefined) filter.robot_id = q.robot_id;
    if (q.status !== undefined) filter.status = q.status;
    if (q.deployment_id !== undefined) filter.deployment_id = q.deployment_id;
    if (q.cursor !== undefined) {
      const c = decodeCursor(q.cursor);
      const t = new Date(c.t);
      filter.$or = [{ timestamp: { $lt: t } }, { timestamp: t, _id: { $lt: c.id } }];
    }
    // One extra row tells whether another page exists without a count query. Live and archived jobs are one
    // list: each collection gives its first limit+1 rows in the same order, and the merge keeps the first limit+1
    // (a job caught in both while it is being archived is listed once, from its live copy).
    const page1 = (model: typeof ctx.models.OtaJob) => model.find(filter).sort({ timestamp: -1, _id: -1 }).limit(q.limit + 1).lean<OtaJob[]>();
    // Live rollout jobs that ended carry their status in a result row (activities/db/ota-rollout-results.ts), and
    // open batched single jobs their RECEIVED / DOWNLOADING in progress rows (activities/db/ota-job-progress.ts).
    const [live, archived] = await Promise.all([liveJobsPageWithProgress(ctx.models, filter, q.limit + 1, ctx.cfg.mongo.timeoutMs), page1(ctx.models.OtaJobArchive)]);
    const seen = new Set(live.map((j) => j._id));
    const rows = [...live, ...archived.filter((j) => !seen.has(j._id))]
      .sort((a, b) => new Date(b.timestamp).getTime() - new Date(a.timestamp).getTime() || (a._id < b._id ? 1 : a._id > b._id ? -1 : 0))
      .slice(0, q.limit + 1);
    const page = rows.slice(0, q.limit);
    const last = page[page.length - 1];
    const next_cursor = rows.length > q.limit && last ? encodeCursor({ t: new Date(last.timestamp).getTime(), id: last._id }) : null;
    res.json({ jobs: page.map((j) => jobState(j, null)), next_cursor });
  });

  r.post('/job/:job_id/cancel', requireRole('operator'), express.json({ limit: '16kb' }), async (req, res) => {
    const { job_id } = parseParams(jobIdParamSchema, req.params);
    // No body (or not JSON) means no reason; a JSON body must be valid: 422 naming the field, like parameters.
    const { reason } = parseParams(cancelBodySchema, req.body ?? {});
    const job = await findJob(ctx.models, job_id);
    if (!job) throw new HttpError(404, JOB_NOT_FOUND);
    const scope = robotScopeProblem(authContext(res), job.robot_id, 'job_id');
    if (scope) throw new HttpError(403, scope);
    if (isTerminal(job.status)) throw new HttpError(409, `Job is already ${job.status}.`);
    const why = reason ?? `canceled via the API by ${authContext(res)?.subject ?? 'an unnamed caller'}`;
    if (job.deployment_id) {
      // One job of a rollout: its rollout's workflow ends it (and tells the robot).
      const outcome = await signalWorkflow(ctx, job.workflow_id, cancelRolloutJobsSignal, { jobIds: [job_id], reason: why }).catch((e: unknown) => {
        throw isTemporalUnavailable(e) ? new HttpError(503, 'Temporal unavailable; the job was not canceled.') : e;
      });
      // A batched single deploy stored by an API that died before starting its batch (deploy-batcher.ts): ended
      // here, CANCELED in the database, like a single job without a workflow (the batch, once the reconciler
      // starts it, dispatches PENDING jobs only).
      if (outcome === 'not-running' && job.status === 'PENDING' && isSinglesBatch(job.deployment_id) && (await cancelOrphanJob(ctx, job_id, why))) {
        ctx.log.warn({ jobId: job_id }, 'PENDING batched job without a workflow canceled in the database');
        res.json({ job_id, status: 'CANCELED', cancel_requested: true });
        return;
      }
      if (outcome === 'not-running') throw new HttpError(409, 'Job has no running workflow.');
      res.status(202).json({ job_id, status: job.status, cancel_requested: true });
      return;
    }
    const signal = async (): Promise<CancelOutcome> => {
      try {
        return await signalCancel(ctx, job.workflow_id, why);
      } catch (e) {
        if (isTemporalUnavailable(e)) throw new HttpError(503, 'Temporal unavailable; the job was not canceled.');
        throw e;
      }
    };
    if ((await signal()) === 'signalled') {
      // Accepted: the workflow decides the terminal state (CANCELED) and writes it.
      res.status(202).json({ job_id, status: job.status, cancel_requested: true });
      return;
    }

    if (job.status === 'PENDING') {
      // A PENDING job without a running workflow (never started, or ended without recording a state): nothing
      // would ever move it (jobs-service.ts), so it ends here, CANCELED in the database (200, not 202).
      if (await cancelOrphanJob(ctx, job_id, why)) {
        // The reconciler may have started its workflow since our signal found none: cancel that run as well.
        // (A run it starts after this sees the job CANCELED and cancels itself: reconciler.ts.)
        await signalCancel(ctx, job.workflow_id, why).catch((err: unknown) =>
          ctx.log.error({ err, jobId: job_id }, 'job canceled in the database; could not signal a workflow that may have started meanwhile'),
        );
        ctx.log.warn({ jobId: job_id }, 'PENDING job without a workflow canceled in the database');
        res.json({ job_id, status: 'CANCELED', cancel_requested: true });
        return;
      }
      // Moved meanwhile (its workflow started and recorded progress, or it ended): answer for where it is now.
      const now = await findJob(ctx.models, job_id);
      if (!now) throw new HttpError(404, JOB_NOT_FOUND);
      if (isTerminal(now.status)) throw new HttpError(409, `Job is already ${now.status}.`);
      if ((await signal()) === 'signalled') {
        res.status(202).json({ job_id, status: now.status, cancel_requested: true });
        return;
      }
    }
    // A job past PENDING whose workflow has ended (its final state is not written yet): nothing left to cancel.
    throw new HttpError(409, 'Job has no running workflow.');
  });

  r.get('/deploy_state/:robot_id', requireRole('viewer'), async (req, res) => {
    const { robot_id } = parseParams(robotIdParamSchema, req.params);
    const rows = await ctx.models.DeployTarget.find({ robot_id }).sort({ deploy_path: 1 }).lean<DeployTarget[]>();
    res.json(rows.map(deployTargetRow));
  });

  return r;
}
