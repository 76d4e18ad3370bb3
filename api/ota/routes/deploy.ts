// Deploy endpoints (reference §1.3, §1.4): both create a job per (file, robot, path) and start its
// otaDeployment workflow, which delivers it over MQTT and follows it to a terminal state.
import { Router, type Response } from 'express';
import type { z } from 'zod';
import type { OtaFile } from '../../../common/models/ota';
import { robotIdSchema } from '../../../common/protocol';
import { noteAudit } from '../../audit';
import { authContext, requireRole, robotScopeProblem } from '../../auth';
import { HttpError } from '../errors';
import { parseParams, requireOtaBucket } from '../http';
import { buildJob, createJobs, type StartOutcome } from '../jobs-service';
import { DeployBatcher } from '../deploy-batcher';
import { createDeployLookups } from '../read-coalescing';
import { deployPathProblem } from '../naming';
import { deleteObjectsQuietly } from '../s3';
import {
  deployFromS3QuerySchema,
  deployQuerySchema,
  fileDeployListSchema,
  timeoutSecondsSchema,
  type FileDeployResult,
} from '../schemas';
import type { OtaContext } from '../types';
import { itemErrorToHttp, receiveFiles, recordFiles, removeFiles } from '../upload';

/** robot_id and deploy_path are required to deploy (the reference answered 200 without deploying, or 404). */
export function robotIdProblem(robotId: string): string | null {
  if (!robotId) return 'robot_id: Field required';
  const r = robotIdSchema.safeParse(robotId);
  return r.success ? null : `robot_id: ${r.error.issues[0]?.message ?? 'invalid'}`;
}

export function deployTargetProblem(robotId: string, deployPath: string): string | null {
  const p = deployPathProblem(deployPath);
  return robotIdProblem(robotId) ?? (p ? `deploy_path: ${p}` : null);
}

type DeployFromS3Query = z.infer<typeof deployFromS3QuerySchema>;

/** 503 when Temporal could not be reached, else 500: the caller learns whether retrying later makes sense. */
const startFailureStatus = (outcomes: readonly StartOutcome[]): number => (outcomes.some((o) => o.unavailable) ? 503 : 500);

export function deployRouter(ctx: OtaContext): Router {
  const r = Router();
  // Single deploys arriving together are stored and started together (deploy-batcher.ts).
  const batcher = new DeployBatcher(ctx);
  const lookups = createDeployLookups(ctx);

  r.post('/file/deploy', requireRole('operator'), async (req, res) => {
    const q = parseParams(deployQuerySchema, req.query);
    const auth = authContext(res);
    const { list, stored, fields, release } = await receiveFiles(ctx, req, {
      schema: fileDeployListSchema,
      checkItem: (info, index) => {
        const problem = deployTargetProblem(info.robot_id, info.deploy_path);
        if (problem) return problem;
        // Before any byte is stored: a robot outside the token's scope refuses the whole request.
        const scope = robotScopeProblem(auth, info.robot_id, `file_info_list.file_list.${index}.robot_id`);
        if (scope) throw new HttpError(403, scope);
        return null;
      },
      withJobId: true,
    });
    // The robots' recorded roots, before anything is recorded: a refused item leaves no job and no file.
    const rootProblems = await Promise.all(list.file_list.map((info) => lookups.rootProblem(info.robot_id, info.deploy_path)));
    const bad = rootProblems.findIndex((p) => p !== null);
    if (bad >= 0) {
      await deleteObjectsQuietly(ctx.s3, stored.map((s) => s.ref), ctx.log);
      await release();
      throw new HttpError(400, `file_info_list.file_list.${bad}.${rootProblems[bad]}`);
    }
    const now = new Date();
    let files: OtaFile[];
    // timeout_s may also come as a form field; it is only known once the body is read.
    let timeoutS = q.timeout_s ?? null;
    try {
      if (timeoutS === null && fields.timeout_s !== undefined) {
        const t = timeoutSecondsSchema.safeParse(fields.timeout_s);
        if (!t.success || t.data === undefined) {
          await deleteObjectsQuietly(ctx.s3, stored.map((s) => s.ref), ctx.log);
          throw new HttpError(422, `timeout_s: ${t.success ? 'invalid' : (t.error.issues[0]?.message ?? 'invalid')}`);
        }
        timeoutS = t.data;
      }
      files = await recordFiles(ctx, stored, now);
    } catch (e) {
      throw itemErrorToHttp(e, list.file_list, true);
    } finally {
      await release();
    }
    const jobs = files.map((file, i) =>
      buildJob({ robotId: list.file_list[i].robot_id, deployPath: list.file_list[i].deploy_path, file, timeoutS }, now),
    );
    noteAudit(res, { objects: files.map((f) => f.s3_object_name), robots: jobs.map((j) => j.robot_id), job_ids: jobs.map((j) => j._id) });
    let outcomes: StartOutcome[];
    try {
      outcomes = await createJobs(ctx, batcher, jobs);
    } catch (e) {
      await removeFiles(ctx, files);
      throw e;
    }
    const results: FileDeployResult[] = files.map((f, i) => ({
      s3_bucket: f.s3_bucket,
      s3_object_name: f.s3_object_name,
      robot_id: jobs[i].robot_id,
      deploy_path: jobs[i].deploy_path,
      filename: f.file_name,
      state: outcomes[i].error ? 'FAILED' : 'PENDING',
      error_msg: outcomes[i].error,
      job_id: jobs[i]._id,
      sha256: f.sha256,
      size: f.size,
    }));
    // Files stay uploaded and started jobs keep running; the failed jobs are FAILED in the database.
    if (outcomes.some((o) => o.error)) throw new HttpError(startFailureStatus(outcomes), results);
    res.json(results);
  });

  r.post('/file/deploy_from_s3', requireRole('operator'), async (req, res) => {
    const q = parseParams(deployFromS3QuerySchema, req.query);
    requireOtaBucket(ctx, q.s3_bucket);
    const robotId = q.robot_id ?? '';
    const robotProblem = robotIdProblem(robotId);
    if (robotProblem) throw new HttpError(400, robotProblem);
    const scope = robotScopeProblem(authContext(res), robotId);
    if (scope) throw new HttpError(403, scope);
    // This request's batch waits for it while it is checked (deploy-batcher.ts); released once it is submitted or refused.
    const arrived = batcher.expect(q.s3_bucket, q.s3_object_name);
    try {
      await deployChecked(q, robotId, res, arrived);
    } finally {
      arrived();
    }
  });

  /** deploy_from_s3 once the caller may deploy to the robot: the lookups, the job, its batch, the answer. */
  async function deployChecked(q: DeployFromS3Query, robotId: string, res: Response, arrived: () => void): Promise<void> {
    // The three lookups go out together (one wait instead of three on a busy database: measured, a burst's requests
    // spent most of their time before the commit in these); the answers are checked in the same order as before.
    // The robot's roots are read up front when the query names the path (else the file's default decides it), and
    // the HEAD is of the object the query names, which is the file record's key.
    const rootsOf = (path: string) => lookups.rootProblem(robotId, path);
    const [file, queryRootProblem, stored] = await Promise.all([
      lookups.file(q.s3_bucket, q.s3_object_name),
      q.deploy_path && !deployPathProblem(q.deploy_path) ? rootsOf(q.deploy_path) : undefined,
      lookups.objectExists(q.s3_bucket, q.s3_object_name).catch((e: unknown) => e as Error),
    ]);
    if (!file) throw new HttpError(404, 'File not found');
    // The query's path overrides the file's default for this job only (not persisted, like the reference).
    const deployPath = q.deploy_path || file.deploy_path || '';
    if (!deployPath) throw new HttpError(400, 'deploy_path: Field required (the file has no default deploy_path)');
    const pathProblem = deployPathProblem(deployPath);
    if (pathProblem) throw new HttpError(400, `deploy_path: ${pathProblem}`);
    const rootProblem = queryRootProblem !== undefined ? queryRootProblem : await rootsOf(deployPath);
    if (rootProblem) throw new HttpError(400, rootProblem);
    if (file.valid === false) throw new HttpError(409, 'File is invalidated; PUT /file/validate before deploying it.');
    // A job for a missing object could only fail on the robot; refuse it here instead.
    if (stored instanceof Error) throw stored;
    if (!stored) throw new HttpError(404, 'File not found in storage');
    const job = buildJob({ robotId, deployPath, file, timeoutS: q.timeout_s ?? null }, new Date());
    noteAudit(res, { job_ids: [job._id] });
    const created = createJobs(ctx, batcher, [job]); // submits the job to its batch before its first await
    arrived();
    const [outcome] = await created;
    if (outcome.error) {
      res.status(startFailureStatus([outcome])).json({ detail: outcome.error, job_id: job._id });
      return;
    }
    const body: FileDeployResult = {
      s3_bucket: file.s3_bucket,
      s3_object_name: file.s3_object_name,
      robot_id: robotId,
      deploy_path: deployPath,
      filename: file.file_name,
      state: 'PENDING',
      error_msg: null,
      job_id: job._id,
      sha256: file.sha256,
      size: file.size,
    };
    res.json(body);
  }

  return r;
}
