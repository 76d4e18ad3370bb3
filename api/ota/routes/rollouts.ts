// Rollouts: one file to many robots (explicit ids or a selector over the robot registry), in waves, with a
// concurrency cap, an abort threshold and an optional deadline, driven by one otaRollout workflow per rollout.
// Its jobs are ordinary OTA jobs (deployment_id = rollout id), visible through job_state, deploy_state and /jobs.
//
// `guard` (reads) and `mutate` (creation, pause, resume, cancel) run before the routes. INTEGRATOR (issue 15):
// rolloutsRouter(ctx, { read: requireRole('viewer'), mutate: requireRole('operator') }).
import { randomUUID } from 'node:crypto';
import express, { Router, type RequestHandler } from 'express';
import type { FilterQuery } from 'mongoose';
import { z } from 'zod';
import { countModelsFor, rolloutCounts, rolloutRobotParts, ROLLOUT_ROBOTS_PART } from '../../../activities/db/ota-rollouts';
import { rolloutDeployPath } from '../../../activities/mqtt/ota-rollout';
import type { OtaFile, OtaRollout } from '../../../common/models/ota';
import { JOB_STATUSES, robotIdSchema, type JobStatus } from '../../../common/protocol';
import {
  cancelRolloutSignal,
  isRolloutFinished,
  pauseRolloutSignal,
  resumeRolloutSignal,
  rolloutWorkflowId,
  waveSizes,
  type RolloutOptions,
  type RolloutStatus,
  type WaveCounts,
} from '../../../workflows/ota-rollout-contract';
import { authContext } from '../../auth';
import { HttpError } from '../errors';
import { parseParams, requireOtaBucket } from '../http';
import { deployPathProblem } from '../naming';
import { objectExists } from '../s3';
import { isTemporalUnavailable, signalWorkflow, startRolloutWorkflow } from '../temporal';
import type { OtaContext } from '../types';
import { rootProblemOf } from './robots';
import { decodeCursor, encodeCursor } from './jobs';
import { SINGLES_PREFIX } from '../deploy-batcher';

/** Most robots one rollout may target (its robot list is one document; 10,000 ids are well below 16 MB). */
export const MAX_ROLLOUT_ROBOTS = 20_000;

export const rolloutBodySchema = z
  .object({
    s3_bucket: z.string().min(1).default('files'),
    s3_object_name: z.string().min(1),
    /** Absolute; `{robot_id}` is replaced by each robot's id. */
    deploy_path: z.string().min(1),
    target: z
      .object({
        robot_ids: z.array(robotIdSchema).min(1).max(MAX_ROLLOUT_ROBOTS).optional(),
        /** Over the robot registry: every provisioned robot whose id starts with id_prefix ("" = all). */
        selector: z.object({ id_prefix: z.string().max(64).default('') }).strict().optional(),
      })
      .strict()
      .refine((t) => (t.robot_ids === undefined) !== (t.selector === undefined), { message: 'give exactly one of robot_ids or selector' }),
    /** Cumulative share of the robots reached by the end of each wave, ascending, e.g. [1, 10, 100]. */
    waves: z
      .array(z.number().gt(0).max(100))
      .min(1)
      .max(20)
      .default([100])
      .refine((w) => w.every((p, i) => i === 0 || p > w[i - 1]), { message: 'must be strictly ascending' }),
    success_threshold_pct: z.number().min(0).max(100).default(100),
    max_concurrency: z.number().int().min(1).max(MAX_ROLLOUT_ROBOTS).default(200),
    abort_after_failures: z.number().int().min(1).optional(),
    abort_after_failure_pct: z.number().gt(0).max(100).optional(),
    deadline_s: z.number().int().min(1).max(30 * 24 * 3600).optional(),
    /** A dispatched job with no report for this long is sent again with a fresh URL (then with backoff). */
    redispatch_after_s: z.number().min(1).max(24 * 3600).default(60),
  })
  .strict();

export const rolloutIdParamSchema = z.object({ rollout_id: z.string().uuid() });
export const rolloutsQuerySchema = z.object({
  status: z.string().optional(),
  limit: z.coerce.number().int().min(1).max(200).default(50),
  cursor: z.string().optional(),
  /** Batches of single deploys (api/ota/deploy-batcher.ts) run as rollouts too; listed only when asked for. */
  include_batches: z.enum(['true', 'false']).default('false'),
});

const escapeRegex = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

interface WaveView {
  wave: number;
  size: number;
  counts: Partial<Record<JobStatus, number>>;
  queued: number;
  awaiting_robot: number;
  in_flight: number;
}

function rolloutView(r: OtaRollout & { _id: string }, waves: WaveCounts[] | null) {
  const counts: Partial<Record<JobStatus, number>> = {};
  for (const w of waves ?? []) for (const s of JOB_STATUSES) if (w.status[s]) counts[s] = (counts[s] ?? 0) + (w.status[s] ?? 0);
  return {
    rollout_id: r._id,
    status: r.status,
    paused: r.paused,
    current_wave: r.current_wave,
    reason: r.reason,
    s3_bucket: r.s3_bucket,
    s3_object_name: r.s3_object_name,
    filename: r.file_name,
    sha256: r.sha256,
    size: r.size,
    deploy_path: r.deploy_path,
    // Robot ids kept apart (robot_parts): their number is the sum of the waves.
    robots: r.robot_parts ? r.wave_sizes.reduce((a, b) => a + b, 0) : r.robot_ids.length,
    wave_sizes: r.wave_sizes,
    options: r.options as RolloutOptions,
    created_at: r.timestamp,
    updated_at: r.updated_at,
    finished_at: r.finished_at,
    workflow_id: r.workflow_id,
    ...(waves
      ? {
          counts,
          waves: waves.map(
            (w, i): WaveView => ({ wave: i, size: w.size, counts: w.status, queued: w.queued, awaiting_robot: w.awaitingRobot, in_flight: w.inFlight }),
          ),
        }
      : {}),
  };
}

const pass: RequestHandler = (_req, _res, next) => next();

export function rolloutsRouter(ctx: OtaContext, guards: { read?: RequestHandler; mutate?: RequestHandler } = {}): Router {
  const r = Router();
  const read = guards.read ?? pass;
  const mutate = guards.mutate ?? pass;
  const json = express.json({ limit: '2mb' });

  r.post('/rollouts', mutate, json, async (req, res) => {
    const b = parseParams(rolloutBodySchema, req.body);
    requireOtaBucket(ctx, b.s3_bucket);
    if (!b.deploy_path.startsWith('/')) throw new HttpError(400, 'deploy_path: must be absolute');
    const file = await ctx.models.OtaFile.findOne({ s3_bucket: b.s3_bucket, s3_object_name: b.s3_object_name }).lean<OtaFile>();
    if (!file) throw new HttpError(404, 's3_object_name: file not found');
    if (file.valid === false) throw new HttpError(409, 's3_object_name: file is invalidated; PUT /file/validate before deploying it.');

    // The robots, from the registry (one read): explicit ids must all be provisioned; a selector takes what matches.
    const ids = b.target.robot_ids ? [...new Set(b.target.robot_ids)] : null;
    // Provisioned for OTA only: the registry also holds center robots that have no MQTT credential.
    const provisioned = { mqtt_username: { $ne: null } };
    const filter = ids
      ? { _id: { $in: ids }, ...provisioned }
      : b.target.selector?.id_prefix
        ? { _id: { $regex: `^${escapeRegex(b.target.selector.id_prefix)}` }, ...provisioned }
        : provisioned;
    const robots = await ctx.models.Robot.find(filter, { _id: 1, deploy_roots: 1 }).sort({ _id: 1 }).lean();
    const byId = new Map(robots.map((x) => [String(x._id), x]));
    const order = ids ?? robots.map((x) => String(x._id));
    if (order.length === 0) throw new HttpError(400, 'target.selector: matches no provisioned robot');
    if (order.length > MAX_ROLLOUT_ROBOTS) throw new HttpError(400, `target: ${order.length} robots, at most ${MAX_ROLLOUT_ROBOTS} per rollout`);
    for (const [i, id] of order.entries()) {
      const target = rolloutDeployPath(b.deploy_path, id);
      const p = deployPathProblem(target);
      if (p) throw new HttpError(400, `deploy_path: ${p} (robot ${id})`);
      const rootProblem = rootProblemOf(byId.get(id) ?? null, id, target);
      if (rootProblem) throw new HttpError(400, ids ? `target.robot_ids.${i}: ${rootProblem}` : rootProblem);
    }
    if (!(await objectExists(ctx.s3, { bucket: file.s3_bucket, key: file.s3_object_name }))) {
      throw new HttpError(404, 's3_object_name: file not found in storage');
    }

    const rolloutId = randomUUID();
    const now = new Date();
    const options: RolloutOptions = {
      wavePercents: b.waves[b.waves.length - 1] === 100 ? b.waves : [...b.waves, 100],
      successThresholdPct: b.success_threshold_pct,
      maxConcurrency: b.max_concurrency,
      abortAfterFailures: b.abort_after_failures ?? null,
      abortAfterFailurePct: b.abort_after_failure_pct ?? null,
      deadlineMs: b.deadline_s ? now.getTime() + b.deadline_s * 1000 : null,
      redispatchAfterMs: Math.round(b.redispatch_after_s * 1000),
    };
    const sizes = waveSizes(order.length, options.wavePercents);
    const doc = {
      _id: rolloutId,
      s3_bucket: file.s3_bucket,
      s3_object_name: file.s3_object_name,
      file_name: file.file_name,
      sha256: file.sha256,
      size: file.size,
      deploy_path: b.deploy_path,
      // The ids go to ota_rollout_robots (written first, below): every read of this document stays small.
      robot_ids: [] as string[],
      robot_parts: Math.ceil(order.length / ROLLOUT_ROBOTS_PART),
      wave_sizes: sizes,
      options,
      status: 'RUNNING' satisfies RolloutStatus,
      paused: false,
      current_wave: 0,
      reason: null,
      created_by: authContext(res)?.subject ?? null,
      timestamp: now,
      updated_at: now,
      finished_at: null,
      workflow_id: rolloutWorkflowId(rolloutId),
    };
    // Inserts (no scan); a part left behind by a failed creation names a rollout that does not exist.
    await ctx.models.OtaRolloutRobots.insertMany(rolloutRobotParts(rolloutId, order), { ordered: false });
    await ctx.models.OtaRollout.create(doc);
    try {
      await startRolloutWorkflow(ctx, { rolloutId, options });
    } catch (err) {
      const unavailable = isTemporalUnavailable(err);
      const reason = `could not start the rollout workflow: ${unavailable ? 'Temporal unavailable' : err instanceof Error ? err.message : String(err)}`;
      ctx.log.error({ err, rolloutId }, 'rollout workflow start failed; rollout marked FAILED');
      await ctx.models.OtaRollout.updateOne({ _id: rolloutId }, { $set: { status: 'FAILED', reason, finished_at: new Date() } });
      throw new HttpError(unavailable ? 503 : 500, reason);
    }
    ctx.log.info({ rolloutId, robots: order.length, waves: sizes }, 'rollout started');
    res.status(201).json(rolloutView(doc as OtaRollout & { _id: string }, null));
  });

  r.get('/rollouts', read, async (req, res) => {
    const q = parseParams(rolloutsQuerySchema, req.query);
    const filter: FilterQuery<OtaRollout> = {};
    if (q.status) filter.status = q.status;
    if (q.include_batches === 'false') filter._id = { $not: new RegExp(`^${SINGLES_PREFIX}`) };
    if (q.cursor) {
      const c = decodeCursor(q.cursor);
      const t = new Date(c.t);
      filter.$or = [{ timestamp: { $lt: t } }, { timestamp: t, _id: { $lt: c.id } }];
    }
    // Without the robot list: a page of rollouts stays small whatever their size.
    const rows = await ctx.models.OtaRollout.find(filter, { robot_ids: 0 }).sort({ timestamp: -1, _id: -1 }).limit(q.limit + 1).lean<Array<OtaRollout & { _id: string }>>();
    const page = rows.slice(0, q.limit);
    const last = page[page.length - 1];
    const next_cursor = rows.length > q.limit && last ? encodeCursor({ t: new Date(last.timestamp).getTime(), id: last._id }) : null;
    res.json({ rollouts: page.map((x) => rolloutView({ ...x, robot_ids: [] }, null)), next_cursor });
  });

  async function load(rolloutId: string) {
    const doc = await ctx.models.OtaRollout.findById(rolloutId).lean<OtaRollout & { _id: string }>();
    if (!doc) throw new HttpError(404, 'Rollout not found');
    return doc;
  }

  r.get('/rollouts/:rollout_id', read, async (req, res) => {
    const { rollout_id } = parseParams(rolloutIdParamSchema, req.params);
    const doc = await load(rollout_id);
    res.json(rolloutView(doc, await rolloutCounts(countModelsFor(doc.status, ctx.models), rollout_id, doc.wave_sizes, ctx.cfg.mongo.timeoutMs, doc.dispatch_cursor ?? -1)));
  });

  const control = (action: 'pause' | 'resume' | 'cancel') =>
    r.post(`/rollouts/:rollout_id/${action}`, mutate, json, async (req, res) => {
      const { rollout_id } = parseParams(rolloutIdParamSchema, req.params);
      const { reason } = parseParams(z.object({ reason: z.string().max(500).optional() }), req.body ?? {});
      const doc = await load(rollout_id);
      if (isRolloutFinished(doc.status as RolloutStatus)) throw new HttpError(409, `Rollout is already ${doc.status}.`);
      const why = reason ?? `${action} via the API by ${authContext(res)?.subject ?? 'an unnamed caller'}`;
      let outcome;
      try {
        outcome =
          action === 'pause'
            ? await signalWorkflow(ctx, doc.workflow_id, pauseRolloutSignal)
            : action === 'resume'
              ? await signalWorkflow(ctx, doc.workflow_id, resumeRolloutSignal)
              : await signalWorkflow(ctx, doc.workflow_id, cancelRolloutSignal, { reason: why });
      } catch (e) {
        if (isTemporalUnavailable(e)) throw new HttpError(503, `Temporal unavailable; the rollout was not told to ${action}.`);
        throw e;
      }
      if (outcome === 'not-running') throw new HttpError(409, 'Rollout has no running workflow.');
      ctx.log.info({ rolloutId: rollout_id, action }, 'rollout control signalled');
      // Accepted: the workflow applies it and stores the rollout's new state.
      res.status(202).json({ rollout_id, action, accepted: true });
    });
  control('pause');
  control('resume');
  control('cancel');
  return r;
}
