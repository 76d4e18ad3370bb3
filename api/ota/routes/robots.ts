// The robot registry on the API (admins): GET/POST /robots, DELETE /robots/{robot_id}, the same provisioning as
// `npm run robot` (infra/robots.ts). POST answers the daemon config once: it holds the robot's new MQTT password.
// Also the deploy-root check the deploy routes run before any job exists.
import path from 'node:path';
import express, { Router, type RequestHandler } from 'express';
import { addRobot, listRobots, ProvisioningError, removeRobot } from '../../../infra/robots';
import { HttpError } from '../errors';
import { parseParams } from '../http';
import { addRobotSchema } from '../schemas';
import type { OtaContext } from '../types';

/** Null when `deployPath` lies inside one of the robot's recorded roots; else a message naming the field. */
export async function deployRootProblem(ctx: Pick<OtaContext, 'models'>, robotId: string, deployPath: string): Promise<string | null> {
  const robot = await ctx.models.Robot.findById(robotId, { deploy_roots: 1, mqtt_username: 1 }).lean();
  return rootProblemOf(robot?.mqtt_username ? robot : null, robotId, deployPath);
}

/** deployRootProblem for a robot document already read (null: not provisioned for OTA). */
export function rootProblemOf(robot: { deploy_roots: string[] } | null, robotId: string, deployPath: string): string | null {
  if (!robot) return `robot_id: robot ${robotId} is not provisioned (npm run robot -- add ${robotId} --root DIR)`;
  const target = path.posix.normalize(deployPath);
  const inside = robot.deploy_roots.some((root) => target.startsWith(root.endsWith('/') ? root : `${root}/`));
  return inside ? null : `deploy_path: ${deployPath} is outside robot ${robotId}'s deploy roots (${robot.deploy_roots.join(', ') || 'none'})`;
}


/** `guard` runs before every route: the API passes requireRole('admin'). */
export function robotsRouter(ctx: OtaContext, guard: RequestHandler): Router {
  const r = Router();
  const provisioning = <T>(work: () => Promise<T>): Promise<T> =>
    work().catch((e: unknown) => {
      throw e instanceof ProvisioningError ? new HttpError(400, e.message) : e;
    });

  r.get('/robots', guard, async (_req, res) => {
    res.json(await listRobots(ctx.models));
  });

  r.post('/robots', guard, express.json({ limit: '64kb' }), async (req, res) => {
    const body = parseParams(addRobotSchema, req.body);
    const stateDir = body.state_dir ?? '/var/lib/fleetsync-ota';
    if (!path.isAbsolute(stateDir)) throw new HttpError(400, 'state_dir: must be an absolute path');
    const added = await provisioning(() =>
      // The config goes to the admin in the answer only: no robot password is left on the API's disk.
      addRobot(ctx.cfg, ctx.models, { id: body.robot_id, roots: body.deploy_roots, stateDir, configPath: null }),
    );
    ctx.log.info({ robot_id: added.id, deploy_roots: added.roots }, 'robot provisioned');
    res.status(201).json({ robot_id: added.id, deploy_roots: added.roots, daemon_config: added.configText });
  });

  r.delete('/robots/:robot_id', guard, async (req, res) => {
    const id = String(req.params.robot_id);
    const { removed } = await provisioning(() => removeRobot(ctx.cfg, ctx.models, id));
    if (!removed) throw new HttpError(404, `robot ${id} is not provisioned`);
    ctx.log.info({ robot_id: id }, 'robot removed');
    res.json({ robot_id: id, removed: true });
  });
  return r;
}
