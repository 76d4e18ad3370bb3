// The offline app's robot endpoints: the specialist registers robots, connects and disconnects them, and runs
// robot sync ("Update Robots"). Connecting makes the SSH handshake: the first contact pins the robot's host key,
// a later different key is refused ("host key mismatch"). A center runs one robot sync at a time: the run has
// the fixed id `robot-sync-<CENTER_ID>`, so GET shows the latest run and a second POST while one runs is a 409.
import { Router } from 'express';
import { WorkflowExecutionAlreadyStartedError, WorkflowIdReusePolicy, WorkflowNotFoundError, type WorkflowClient } from '@temporalio/client';
import { z } from 'zod';
import type { Config } from '../../common/config';
import type { OfflineModels, OfflineRobot } from '../../common/models/offline';
import { HostKeyMismatchError, RobotCredentialError, RobotUnreachableError } from '../../activities/ssh/connect';
import { connectOfflineRobot } from '../../activities/ssh/robot-session';
import type { RobotSyncInput, RobotSyncProgress, RobotSyncResult } from '../../workflows/offline/robot-sync';
import { HttpError } from '../ota/errors';
import { parseParams } from '../ota/http';

const robotIdSchema = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'letters, digits, _ and - only (1-64)');

const robotBodySchema = z.object({
  host: z.string().min(1).max(255),
  port: z.coerce.number().int().min(1).max(65535).default(22),
  username: z.string().min(1).max(64),
  credential_ref: z.string().regex(/^(env:[A-Za-z_][A-Za-z0-9_]*|key:\/.+)$/, 'env:<VARNAME> or key:<absolute key file path>'),
  rf_root: z.string().regex(/^\/.+/, 'absolute directory on the robot').refine((p) => !p.split('/').includes('..'), 'no ".." segments'),
});

const syncBodySchema = z
  .object({
    robot_ids: z.array(robotIdSchema).min(1).max(1000).optional(),
    concurrency: z.number().int().min(1).max(32).optional(),
  })
  .strict();

export const robotSyncWorkflowId = (cfg: Config) => `robot-sync-${cfg.offline.centerId}`;

/** A robot as the UI shows it: its credential is a reference (which variable or key file), never the secret. */
const robotView = (r: OfflineRobot) => ({
  robot_id: r._id,
  host: r.host,
  port: r.port,
  username: r.username,
  credential_ref: r.credential_ref,
  host_key_sha256: r.host_key_sha256,
  connected: r.connected,
  rf_root: r.rf_root,
  last_inventory_at: r.last_inventory_at,
  last_sync: r.last_sync,
});

function parseBody<T>(schema: z.ZodType<T>, body: unknown): T {
  const parsed = schema.safeParse(body ?? {});
  if (!parsed.success) {
    throw new HttpError(400, parsed.error.issues.map((i) => `${i.path.length ? i.path.join('.') : 'body'}: ${i.message}`).join('; '));
  }
  return parsed.data;
}

export function robotsRouter(deps: { cfg: Config; models: OfflineModels; temporal: WorkflowClient }): Router {
  const { cfg, models, temporal } = deps;
  const r = Router();
  const robotParam = z.object({ robot_id: robotIdSchema });
  const getRobot = async (id: string) => {
    const robot = await models.Robot.findById(id).lean<OfflineRobot>();
    if (!robot) throw new HttpError(404, `robot_id: no robot ${id}`);
    return robot;
  };

  r.get('/robots', async (_req, res) => {
    const rows = await models.Robot.find({}).sort({ _id: 1 }).lean<OfflineRobot[]>();
    res.json({ robots: rows.map(robotView) });
  });

  // Robot sync routes come before /robots/:robot_id so "sync" is never taken for a robot id.
  r.post('/robots/sync', async (req, res) => {
    const body = parseBody(syncBodySchema, req.body);
    const input: RobotSyncInput = { robotIds: body.robot_ids, concurrency: body.concurrency };
    const workflowId = robotSyncWorkflowId(cfg);
    try {
      const handle = await temporal.start('robotSync', {
        taskQueue: cfg.offline.temporal.taskQueue,
        workflowId,
        args: [input],
        // A finished run makes room for the next one; a running one is reported, not doubled.
        workflowIdReusePolicy: WorkflowIdReusePolicy.ALLOW_DUPLICATE,
      });
      res.status(202).json({ workflow_id: workflowId, run_id: handle.firstExecutionRunId, state: 'running' });
    } catch (e) {
      if (e instanceof WorkflowExecutionAlreadyStartedError) throw new HttpError(409, `robot sync already running (workflow ${workflowId})`);
      throw e;
    }
  });

  r.get('/robots/sync', async (_req, res) => {
    const handle = temporal.getHandle(robotSyncWorkflowId(cfg));
    let status: string;
    try {
      status = (await handle.describe()).status.name;
    } catch (e) {
      if (e instanceof WorkflowNotFoundError) throw new HttpError(404, 'no robot sync has run yet');
      throw e;
    }
    const progress = await handle.query<RobotSyncProgress>('robotSyncProgress').catch(() => null);
    const result = status === 'COMPLETED' ? await handle.result() as RobotSyncResult : null;
    res.json({ workflow_id: handle.workflowId, status, progress, result });
  });

  r.put('/robots/:robot_id', async (req, res) => {
    const { robot_id } = parseParams(robotParam, req.params);
    const body = parseBody(robotBodySchema, req.body);
    const before = await models.Robot.findById(robot_id).lean<OfflineRobot>();
    // Another address is another machine: its key must be pinned anew, and it starts disconnected.
    const moved = before && (before.host !== body.host || before.port !== body.port);
    if (before) await models.Robot.updateOne({ _id: robot_id }, { $set: { ...body, ...(moved ? { host_key_sha256: null, connected: false } : {}) } });
    else await models.Robot.create({ _id: robot_id, ...body, host_key_sha256: null, connected: false });
    res.status(before ? 200 : 201).json(robotView(await getRobot(robot_id)));
  });

  r.post('/robots/:robot_id/connect', async (req, res) => {
    const { robot_id } = parseParams(robotParam, req.params);
    const robot = await getRobot(robot_id);
    try {
      const { client, pinnedNow } = await connectOfflineRobot(models, robot);
      client.end();
      await models.Robot.updateOne({ _id: robot_id }, { $set: { connected: true } });
      res.json({ ...robotView(await getRobot(robot_id)), host_key_pinned_now: pinnedNow });
    } catch (e) {
      if (e instanceof HostKeyMismatchError) throw new HttpError(409, e.message);
      if (e instanceof RobotUnreachableError) throw new HttpError(503, e.message);
      if (e instanceof RobotCredentialError) throw new HttpError(422, e.message);
      throw e;
    }
  });

  r.post('/robots/:robot_id/disconnect', async (req, res) => {
    const { robot_id } = parseParams(robotParam, req.params);
    await getRobot(robot_id);
    await models.Robot.updateOne({ _id: robot_id }, { $set: { connected: false } });
    res.json(robotView(await getRobot(robot_id)));
  });

  return r;
}
