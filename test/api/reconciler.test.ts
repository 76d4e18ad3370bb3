// Jobs left PENDING without a workflow (the API died between inserting the job and starting its workflow, or
// could not mark a failed start FAILED) against the real Temporal server: the reconciler starts their workflow,
// at boot and then periodically, and a cancel of such a job ends it CANCELED in the database.
import crypto from 'node:crypto';
import { WorkflowNotFoundError } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import { findJob } from '../../activities/db/ota-jobs';
import { buildJob } from '../../api/ota/jobs-service';
import { JobReconciler, reconcileClosedWorkflows, reconcileOrphanBatches, startOrphanWorkflow } from '../../api/ota/reconciler';
import { batchDocument, SINGLES_PREFIX } from '../../api/ota/deploy-batcher';
import { OTA_ROLLOUT_WORKFLOW, rolloutWorkflowId } from '../../workflows/ota-rollout-contract';
import { DEPLOYMENT_ID_SA } from '../../workflows/search-attributes';
import type { FileDeployResult, JobState } from '../../api/ota/schemas';
import { startDeploymentWorkflow } from '../../api/ota/temporal';
import { resolveContext, type OtaAppOptions } from '../../api/ota/types';
import type { OtaJob } from '../../common/models/ota';
import { OTA_DEPLOYMENT_WORKFLOW, otaWorkflowId, type OtaDeploymentInput } from '../../workflows/ota-contract';
import { JOB_STATE_SA, ROBOT_ID_SA } from '../../workflows/search-attributes';
import { eventually } from '../helpers';
import { fileInfoList, filePart, form, request, startHarness, type Harness } from './harness';

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h?.close();
});

const reconciler = (options: Partial<OtaAppOptions> = {}) => new JobReconciler({ ...h.deps, options: { ...h.deps.options, ...options } });

/** A PENDING job document and nothing else: what a crash between the insert and the workflow start leaves. */
async function orphan(ageMs: number, o: { robotId?: string; timeoutS?: number | null } = {}): Promise<OtaJob> {
  const job = buildJob(
    {
      robotId: o.robotId ?? 'robot01',
      deployPath: '/tmp/orphan.txt',
      file: { s3_bucket: 'files', s3_object_name: 'orphan.txt', file_name: 'orphan.txt', sha256: 'ab'.repeat(32), size: 3 },
      timeoutS: o.timeoutS ?? null,
    },
    new Date(Date.now() - ageMs),
  );
  await h.db.models.OtaJob.create(job);
  return job;
}

const describeWf = (jobId: string) => h.temporal.getHandle(otaWorkflowId(jobId)).describe();
const workflowExists = (jobId: string) =>
  describeWf(jobId).then(
    () => true,
    (e: unknown) => {
      if (e instanceof WorkflowNotFoundError) return false;
      throw e;
    },
  );

async function startedInput(jobId: string): Promise<OtaDeploymentInput> {
  const history = await h.temporal.getHandle(otaWorkflowId(jobId)).fetchHistory();
  const started = history.events?.[0]?.workflowExecutionStartedEventAttributes;
  return defaultPayloadConverter.fromPayload<OtaDeploymentInput>(started!.input!.payloads![0]);
}

async function signalNames(jobId: string): Promise<string[]> {
  const history = await h.temporal.getHandle(otaWorkflowId(jobId)).fetchHistory();
  return (history.events ?? []).flatMap((e) => (e.workflowExecutionSignaledEventAttributes ? [e.workflowExecutionSignaledEventAttributes.signalName ?? ''] : []));
}

describe('job reconciler', () => {
  it('starts the workflow of a PENDING job older than the grace period that has none, with RobotId/JobState', async () => {
    const job = await orphan(120_000, { robotId: 'robot-orphan' });
    expect(await workflowExists(job._id)).toBe(false);

    const pass = await reconciler({ reconcileGraceMs: 30_000 }).runOnce();
    expect(pass.started).toContain(job._id);

    const d = await describeWf(job._id);
    expect(d.type).toBe(OTA_DEPLOYMENT_WORKFLOW);
    expect(d.taskQueue).toBe(h.cfg.temporal.taskQueue);
    expect(d.status.name).toBe('RUNNING');
    expect(d.typedSearchAttributes.get(ROBOT_ID_SA)).toBe('robot-orphan');
    expect(d.typedSearchAttributes.get(JOB_STATE_SA)).toBe('PENDING');
    expect(await startedInput(job._id)).toEqual({ jobId: job._id, robotId: 'robot-orphan', timeoutSeconds: null });
    // Still PENDING in the database: from here on the workflow drives it.
    expect((await h.db.models.OtaJob.findById(job._id).lean())?.status).toBe('PENDING');

    // Idempotent: the next pass finds the workflow and starts nothing (same run).
    const again = await reconciler({ reconcileGraceMs: 30_000 }).runOnce();
    expect(again.started).not.toContain(job._id);
    expect((await describeWf(job._id)).runId).toBe(d.runId);
  });

  it('leaves jobs younger than the grace period, jobs with a workflow and terminal jobs alone', async () => {
    const young = await orphan(1_000);
    const failed = await orphan(120_000);
    await h.db.models.OtaJob.updateOne({ _id: failed._id }, { $set: { status: 'FAILED' } });
    const up = await request<FileDeployResult[]>(h, 'POST', '/file/deploy', {
      body: form([fileInfoList([{ robot_id: 'robot01', deploy_path: '/tmp/r' }]), filePart('reconcile')]),
    });
    expect(up.status).toBe(200);
    const normal = up.body[0].job_id;
    await h.db.models.OtaJob.updateOne({ _id: normal }, { $set: { timestamp: new Date(Date.now() - 120_000) } });
    // A deploy's job is driven by its batch's workflow (api/ota/deploy-batcher.ts).
    const normalWf = (await h.db.models.OtaJob.findById(normal).lean())!.workflow_id;
    const runId = (await h.temporal.getHandle(normalWf).describe()).runId;

    const pass = await reconciler({ reconcileGraceMs: 30_000 }).runOnce();
    expect(pass.started).not.toContain(young._id);
    expect(pass.started).not.toContain(failed._id);
    expect(pass.started).not.toContain(normal);
    expect(await workflowExists(young._id)).toBe(false);
    expect(await workflowExists(failed._id)).toBe(false);
    expect((await reconcileOrphanBatches(resolveContext({ ...h.deps, options: { ...h.deps.options, reconcileGraceMs: 30_000 } }))).started).toEqual([]);
    expect((await h.temporal.getHandle(normalWf).describe()).runId).toBe(runId);
  });

  it('never starts a second run for a job whose workflow has closed', async () => {
    const job = await orphan(120_000);
    const ctx = resolveContext(h.deps);
    const input = { jobId: job._id, robotId: job.robot_id, timeoutSeconds: null };
    expect(await startDeploymentWorkflow(ctx, input)).toBe('started');
    const first = await describeWf(job._id);
    await h.temporal.getHandle(otaWorkflowId(job._id)).terminate('test: workflow ended, job left PENDING');
    expect(await startDeploymentWorkflow(ctx, input)).toBe('exists');
    await reconciler({ reconcileGraceMs: 30_000 }).runOnce();
    const after = await describeWf(job._id);
    expect({ runId: after.runId, status: after.status.name }).toEqual({ runId: first.runId, status: 'TERMINATED' });
  });

  it('passes the time left of timeout_s, counted from the job creation', async () => {
    const job = await orphan(100_000, { timeoutS: 3600 });
    await reconciler({ reconcileGraceMs: 30_000 }).runOnce();
    const t = (await startedInput(job._id)).timeoutSeconds!;
    expect(t).toBeGreaterThan(3600 - 110);
    expect(t).toBeLessThanOrEqual(3600 - 100);
  });

  it('works through more jobs than one chunk, resuming where a capped pass stopped', async () => {
    const robot = `robot-bulk-${Date.now()}`;
    const jobs: OtaJob[] = [];
    for (let i = 0; i < 55; i++) jobs.push(await orphan(200_000 - i, { robotId: robot }));
    const rec = reconciler({ reconcileGraceMs: 30_000, reconcileMaxJobsPerPass: 50 });
    const first = await rec.runOnce();
    expect(first.scanned).toBeLessThanOrEqual(50);
    expect(first.complete).toBe(false);
    let passes = 1;
    for (let last = first; !last.complete && passes < 10; passes++) last = await rec.runOnce();
    for (const j of jobs) expect(await workflowExists(j._id)).toBe(true);
  });

  it('runs at boot and then every interval until stopped', async () => {
    const old = await orphan(120_000);
    const rec = reconciler({ reconcileGraceMs: 1_500, reconcileIntervalMs: 200 });
    rec.start();
    try {
      await eventually('boot pass started the old orphan', () => workflowExists(old._id), 10_000);
      const fresh = await orphan(0);
      await eventually('a later pass started the fresh orphan', () => workflowExists(fresh._id), 10_000);
      const started = (await describeWf(fresh._id)).startTime.getTime();
      expect(started - new Date(fresh.timestamp).getTime()).toBeGreaterThanOrEqual(1_500);
    } finally {
      await rec.stop();
    }
    const later = await orphan(120_000);
    await new Promise((r) => setTimeout(r, 600));
    expect(await workflowExists(later._id)).toBe(false);
  });

  it('cancels the workflow it started when the job was canceled meanwhile', async () => {
    const job = await orphan(120_000);
    // The reconciler read the job while PENDING; a cancel ended it before the start went through.
    await h.db.models.OtaJob.updateOne({ _id: job._id }, { $set: { status: 'CANCELED', finished_at: new Date() } });
    expect(await startOrphanWorkflow(resolveContext(h.deps), job)).toBe('started');
    expect(await signalNames(job._id)).toEqual(['cancelJob']);
  });
});

describe('POST /job/{job_id}/cancel of a PENDING job without a workflow', () => {
  it('ends the job CANCELED in the database (200) instead of 409', async () => {
    const job = await orphan(120_000);
    const r = await request(h, 'POST', `/job/${job._id}/cancel`, {
      body: JSON.stringify({ reason: 'stuck job' }),
      headers: { 'content-type': 'application/json' },
    });
    expect(r).toMatchObject({ status: 200, body: { job_id: job._id, status: 'CANCELED', cancel_requested: true } });
    const stored = await h.db.models.OtaJob.findById(job._id).lean();
    expect(stored).toMatchObject({ status: 'CANCELED', error_msg: 'canceled: stuck job', finished_at: expect.any(Date) });
    expect((await request<JobState>(h, 'GET', `/job_state/${job._id}`)).body.status).toBe('CANCELED');
    // Nothing to drive any more: the reconciler leaves it alone, and a second cancel is a 409.
    await reconciler({ reconcileGraceMs: 30_000 }).runOnce();
    expect(await workflowExists(job._id)).toBe(false);
    expect(await request(h, 'POST', `/job/${job._id}/cancel`)).toMatchObject({ status: 409, body: { detail: 'Job is already CANCELED.' } });
  });
});

test('a job whose workflow was terminated from Temporal Web is reconciled to CANCELED; a running one is left alone', async () => {
  const ctx = resolveContext({ ...h.deps, options: { ...h.deps.options, reconcileGraceMs: 1000 } });
  const terminated = await orphan(60_000);
  const running = await orphan(60_000);
  for (const job of [terminated, running]) {
    expect(await startDeploymentWorkflow(ctx, { jobId: job._id, robotId: job.robot_id })).toBe('started');
  }
  await h.temporal.getHandle(otaWorkflowId(terminated._id)).terminate('terminated from Temporal Web');
  // Visibility catches up with the termination within a moment.
  await eventually('terminated job reconciled', async () => {
    await reconcileClosedWorkflows(ctx);
    return (await h.db.models.OtaJob.findById(terminated._id).lean())?.status === 'CANCELED';
  });
  const ended = await h.db.models.OtaJob.findById(terminated._id).lean();
  expect(ended!.error_msg).toContain('terminated');
  expect(ended!.finished_at).not.toBeNull();
  expect(ended!.transitions?.map((t) => t.status)).toEqual(['CANCELED']);
  expect(['PENDING', 'RECEIVED', 'DOWNLOADING']).toContain((await h.db.models.OtaJob.findById(running._id).lean())?.status);
  await h.temporal.getHandle(otaWorkflowId(running._id)).terminate('test cleanup');
});

/** Batch jobs stored and nothing else (no batch document, no workflow): an API that died right after the insert. */
async function orphanBatch(ageMs: number, n: number, store: 'jobs' | 'document' = 'jobs'): Promise<OtaJob[]> {
  const batchId = `${SINGLES_PREFIX}${crypto.randomUUID()}`;
  const jobs = Array.from({ length: n }, (_, seq) => ({
    ...buildJob(
      {
        robotId: 'robot01',
        deployPath: `/tmp/orphan-batch-${seq}.txt`,
        file: { s3_bucket: 'files', s3_object_name: 'orphan.txt', file_name: 'orphan.txt', sha256: 'ab'.repeat(32), size: 3 },
        timeoutS: null,
        deploymentId: batchId,
        workflowId: rolloutWorkflowId(batchId),
      },
      new Date(Date.now() - ageMs),
    ),
    wave: 0,
    seq,
    dispatch_state: 'queued' as const,
  }));
  // 'document': the batch's document stored and not its jobs (the other write of a batch, deploy-batcher.ts).
  if (store === 'document') await h.db.models.OtaRollout.create(batchDocument(batchId, jobs, jobs[0].timestamp));
  else await h.db.models.OtaJob.insertMany(jobs);
  return jobs;
}

describe('batched single deploys (api/ota/deploy-batcher.ts)', () => {
  it('a batch stored without its workflow gets its batch document and its workflow once, after the grace period', async () => {
    const young = await orphanBatch(1_000, 1);
    const jobs = await orphanBatch(120_000, 3);
    const batchId = jobs[0].deployment_id!;
    // A batch document whose jobs were never stored: nothing was acknowledged; it ends FAILED (a young one waits).
    const [emptyOld] = await orphanBatch(120_000, 2, 'document');
    const [emptyYoung] = await orphanBatch(1_000, 2, 'document');
    const ctx = resolveContext({ ...h.deps, options: { ...h.deps.options, reconcileGraceMs: 30_000 } });
    const pass = await reconcileOrphanBatches(ctx);
    expect(pass.started).toContain(batchId);
    expect(pass.started).not.toContain(young[0].deployment_id);
    expect(pass.emptied).toContain(emptyOld.deployment_id);
    expect(pass.emptied).not.toContain(emptyYoung.deployment_id);
    expect(pass.emptied).not.toContain(batchId);
    expect(await h.db.models.OtaRollout.findById(emptyOld.deployment_id).lean()).toMatchObject({ status: 'FAILED', reason: expect.stringContaining('no job') });
    expect(await h.db.models.OtaRollout.findById(emptyYoung.deployment_id).lean()).toMatchObject({ status: 'RUNNING' });
    await h.db.models.OtaRollout.deleteOne({ _id: emptyYoung.deployment_id });
    const d = await h.temporal.getHandle(rolloutWorkflowId(batchId)).describe();
    expect(d.type).toBe(OTA_ROLLOUT_WORKFLOW);
    expect(d.typedSearchAttributes.get(DEPLOYMENT_ID_SA)).toBe(batchId);
    expect((d.memo as { jobIds: string[] }).jobIds).toEqual(jobs.map((j) => j._id));
    expect(await h.db.models.OtaRollout.findById(batchId).lean()).toMatchObject({ status: 'RUNNING', wave_sizes: [3], robot_ids: [], dispatch_cursor: -1 });
    // Idempotent: a later pass (visibility has it by then) starts nothing, the run stays the same.
    await eventually('visibility lists the batch', async () => !(await reconcileOrphanBatches(ctx)).started.includes(batchId));
    expect((await h.temporal.getHandle(rolloutWorkflowId(batchId)).describe()).runId).toBe(d.runId);
  });

  it('a batch job PENDING without a workflow is canceled in the database (200); a terminated batch workflow ends its open jobs CANCELED', async () => {
    const [stuck] = await orphanBatch(120_000, 1);
    const r = await request(h, 'POST', `/job/${stuck._id}/cancel`, { body: JSON.stringify({ reason: 'stuck batch' }), headers: { 'content-type': 'application/json' } });
    expect(r).toMatchObject({ status: 200, body: { job_id: stuck._id, status: 'CANCELED', cancel_requested: true } });
    expect(await h.db.models.OtaJob.findById(stuck._id).lean()).toMatchObject({ status: 'CANCELED', error_msg: 'canceled: stuck batch' });

    const up = await request<FileDeployResult[]>(h, 'POST', '/file/deploy', {
      body: form([fileInfoList([{ robot_id: 'robot01', deploy_path: '/tmp/tb1' }, { robot_id: 'robot02', deploy_path: '/tmp/tb2' }]), filePart('tb1'), filePart('tb2')]),
    });
    expect(up.status).toBe(200);
    const ids = up.body.map((b) => b.job_id);
    const wfs = [...new Set((await h.db.models.OtaJob.find({ _id: { $in: ids } }).lean()).map((j) => j.workflow_id))];
    for (const wf of wfs) await h.temporal.getHandle(wf).terminate('terminated from Temporal Web');
    const ctx = resolveContext({ ...h.deps, options: { ...h.deps.options, reconcileGraceMs: 0 } });
    // A batch's jobs end as result rows (activities/db/ota-rollout-results.ts): read them as job_state does.
    const ended = async () => Promise.all(ids.map(async (id) => (await findJob(h.db.models, id))!));
    await eventually('batch jobs reconciled', async () => {
      await reconcileClosedWorkflows(ctx);
      return (await ended()).every((j) => j.status === 'CANCELED');
    });
    for (const j of await ended()) {
      expect(j.error_msg).toContain('terminated');
      expect(j.transitions?.map((t) => t.status)).toEqual(['CANCELED']);
    }
  });
});
