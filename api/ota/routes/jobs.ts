// Job endpoints: the reference's GET /job_state/{id} and GET /deploy_state/{robot}, plus ours: a paginated job
// list and cancel. Job documents are the record; the workflow adds live progress while a job runs.
import express, { Router } from 'express';
import type { FilterQuery } from 'mongoose';
import type { DeployTarget, OtaJob } from '../../../common/models/ota';
import { isTerminal } from '../../../common/protocol';
import { authContext } from '../../auth';
import { HttpError } from '../errors';
import { parseParams } from '../http';
import { cancelBodySchema, jobIdParamSchema, jobsQuerySchema, robotIdParamSchema } from '../schemas';
import { isTemporalUnavailable, queryJobProgress, signalCancel } from '../temporal';
import type { OtaContext } from '../types';
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

  r.get('/job_state/:job_id', async (req, res) => {
    const { job_id } = parseParams(jobIdParamSchema, req.params);
    const job = await ctx.models.OtaJob.findById(job_id).lean<OtaJob>();
    if (!job) throw new HttpError(404, JOB_NOT_FOUND);
    const live = isTerminal(job.status) ? null : await queryJobProgress(ctx, job.workflow_id);
    res.json(jobState(job, live));
  });

  r.get('/jobs', async (req, res) => {
    const q = parseParams(jobsQuerySchema, req.query);
    const filter: FilterQuery<OtaJob> = {};
    if (q.robot_id !== undefined) filter.robot_id = q.robot_id;
    if (q.status !== undefined) filter.status = q.status;
    if (q.cursor !== undefined) {
      const c = decodeCursor(q.cursor);
      const t = new Date(c.t);
      filter.$or = [{ timestamp: { $lt: t } }, { timestamp: t, _id: { $lt: c.id } }];
    }
    // One extra row tells whether another page exists without a count query.
    const rows = await ctx.models.OtaJob.find(filter)
      .sort({ timestamp: -1, _id: -1 })
      .limit(q.limit + 1)
      .lean<OtaJob[]>();
    const page = rows.slice(0, q.limit);
    const last = page[page.length - 1];
    const next_cursor = rows.length > q.limit && last ? encodeCursor({ t: new Date(last.timestamp).getTime(), id: last._id }) : null;
    res.json({ jobs: page.map((j) => jobState(j, null)), next_cursor });
  });

  r.post('/job/:job_id/cancel', express.json({ limit: '16kb' }), async (req, res) => {
    const { job_id } = parseParams(jobIdParamSchema, req.params);
    const body = cancelBodySchema.safeParse(req.body ?? {});
    const reason = body.success ? body.data.reason : undefined;
    const job = await ctx.models.OtaJob.findById(job_id).lean<OtaJob>();
    if (!job) throw new HttpError(404, JOB_NOT_FOUND);
    if (isTerminal(job.status)) throw new HttpError(409, `Job is already ${job.status}.`);
    let outcome;
    try {
      outcome = await signalCancel(ctx, job.workflow_id, reason ?? `canceled via the API by ${authContext(res)?.subject ?? 'an unnamed caller'}`);
    } catch (e) {
      if (isTemporalUnavailable(e)) throw new HttpError(503, 'Temporal unavailable; the job was not canceled.');
      throw e;
    }
    // The workflow has ended but its final state is not written yet: nothing left to cancel.
    if (outcome === 'not-running') throw new HttpError(409, 'Job has no running workflow.');
    // Accepted: the workflow decides the terminal state (CANCELED) and writes it.
    res.status(202).json({ job_id, status: job.status, cancel_requested: true });
  });

  r.get('/deploy_state/:robot_id', async (req, res) => {
    const { robot_id } = parseParams(robotIdParamSchema, req.params);
    const rows = await ctx.models.DeployTarget.find({ robot_id }).sort({ deploy_path: 1 }).lean<DeployTarget[]>();
    res.json(rows.map(deployTargetRow));
  });

  return r;
}
