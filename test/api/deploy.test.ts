// Deploy and job endpoints against the real stack. No worker polls the harness's task queue, so a started
// otaDeployment workflow stays at its first event: the tests check that it was started (type, queue, input,
// search attributes) and what the API stored and answered; the workflow itself is tested in test/workflows.
import { recordRobots } from '../../infra/robots';
import { DeleteObjectCommand } from '@aws-sdk/client-s3';
import { defaultPayloadConverter } from '@temporalio/common';
import type { FileDeployResult, JobState } from '../../api/ota/schemas';
import { OTA_DEPLOYMENT_WORKFLOW, otaWorkflowId, type OtaDeploymentInput } from '../../workflows/ota-contract';
import { DEPLOYMENT_ID_SA, JOB_STATE_SA, ROBOT_ID_SA } from '../../workflows/search-attributes';
import { OTA_ROLLOUT_WORKFLOW, rolloutWorkflowId } from '../../workflows/ota-rollout-contract';
import { uniqueId } from '../helpers';
import { fileInfoList, filePart, form, listKeys, request, sha256, startHarness, uniqueName, type Harness } from './harness';

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h?.close();
});

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

async function startedInput(workflowId: string): Promise<OtaDeploymentInput> {
  const history = await h.temporal.getHandle(workflowId).fetchHistory();
  const started = history.events?.[0]?.workflowExecutionStartedEventAttributes;
  return defaultPayloadConverter.fromPayload<OtaDeploymentInput>(started!.input!.payloads![0]);
}

/** The workflow that drives a job: its batch's for a batched single deploy (no timeout), else its own. */
async function workflowOf(jobId: string): Promise<string> {
  return (await h.db.models.OtaJob.findById(jobId).lean())!.workflow_id;
}

/**
 * A deploy without a timeout joins a batch (api/ota/deploy-batcher.ts): stored queued in the batch's first wave,
 * driven by the batch's workflow, which names the job in its memo and is searchable by the batch id; its input
 * carries ids and options only. With a timeout, the job gets its own otaDeployment workflow.
 */
async function expectWorkflowStarted(jobId: string, robotId: string, timeoutSeconds: number | null = null): Promise<void> {
  if (timeoutSeconds === null) return expectBatchStarted(jobId, robotId);
  const d = await h.temporal.getHandle(otaWorkflowId(jobId)).describe();
  expect(d.type).toBe(OTA_DEPLOYMENT_WORKFLOW);
  expect(d.taskQueue).toBe(h.cfg.temporal.taskQueue);
  expect(d.status.name).toBe('RUNNING');
  expect(d.typedSearchAttributes.get(ROBOT_ID_SA)).toBe(robotId);
  expect(d.typedSearchAttributes.get(JOB_STATE_SA)).toBe('PENDING');
  // The input carries the stored job's dispatch fields (no second read at dispatch) and never a URL or secret.
  const job = await h.db.models.OtaJob.findById(jobId).lean();
  expect(job).not.toBeNull();
  const { s3_bucket, s3_object_name, deploy_path, sha256, size, mode } = job!;
  const input = await startedInput(otaWorkflowId(jobId));
  expect(input).toEqual({
    jobId,
    robotId,
    timeoutSeconds,
    job: { s3_bucket, s3_object_name, deploy_path, sha256, size, ...(typeof mode === 'number' ? { mode } : {}) },
  });
  expect(JSON.stringify(input)).not.toMatch(/https?:|X-Amz|password|secret/i);
}

async function expectBatchStarted(jobId: string, robotId: string): Promise<void> {
  const job = await h.db.models.OtaJob.findById(jobId).lean();
  expect(job).toMatchObject({ robot_id: robotId, status: 'PENDING', wave: 0, dispatch_state: 'queued', deployment_id: expect.stringMatching(/^singles-/) });
  expect(job!.workflow_id).toBe(rolloutWorkflowId(job!.deployment_id!));
  const handle = h.temporal.getHandle(job!.workflow_id);
  const d = await handle.describe();
  expect(d.type).toBe(OTA_ROLLOUT_WORKFLOW);
  expect(d.taskQueue).toBe(h.cfg.temporal.taskQueue);
  expect(d.status.name).toBe('RUNNING');
  expect(d.typedSearchAttributes.get(DEPLOYMENT_ID_SA)).toBe(job!.deployment_id);
  expect((d.memo as { jobIds: string[] }).jobIds).toContain(jobId);
  const batch = await h.db.models.OtaRollout.findById(job!.deployment_id).lean();
  expect(batch).toMatchObject({ status: 'RUNNING', robot_ids: [], s3_object_name: job!.s3_object_name });
  expect(batch!.wave_sizes[0]).toBeGreaterThan(job!.seq!);
  const started = (await handle.fetchHistory()).events?.[0]?.workflowExecutionStartedEventAttributes;
  const input = defaultPayloadConverter.fromPayload<{ rolloutId: string }>(started!.input!.payloads![0]);
  expect(input.rolloutId).toBe(job!.deployment_id);
  expect(JSON.stringify(input)).not.toMatch(/https?:|X-Amz|password|secret/i);
}

async function upload(items: object[], contents: string[]): Promise<FileDeployResult[]> {
  const r = await request<FileDeployResult[]>(h, 'POST', '/file/upload', {
    body: form([fileInfoList(items), ...contents.map((c) => filePart(c))]),
  });
  expect(r.status).toBe(200);
  return r.body;
}

const deployFromS3 = (query: Record<string, string>) =>
  request<FileDeployResult & { detail?: string }>(h, 'POST', `/file/deploy_from_s3?${new URLSearchParams(query).toString()}`);

/** What a failed request could have left: objects under its file name, file rows, jobs. */
async function leftovers(name: string) {
  return {
    keys: [...(await listKeys(h.s3, 'files', name))],
    files: await h.db.models.OtaFile.countDocuments({}),
    jobs: await h.db.models.OtaJob.countDocuments({}),
  };
}

describe('POST /file/deploy', () => {
  it('stores each file, creates a PENDING job and starts its workflow with RobotId/JobState', async () => {
    const r = await request<FileDeployResult[]>(h, 'POST', '/file/deploy', {
      body: form([
        fileInfoList([
          { s3_bucket: 'files', robot_id: 'robot01', deploy_path: '/tmp/test.txt' },
          { robot_id: 'robot02', deploy_path: '/opt/app/b.bin', file_metadata: { kind: 'b' } },
        ]),
        filePart('file a', 'a.txt'),
        filePart('file b', 'b.bin'),
      ]),
    });
    expect(r.status).toBe(200);
    expect(r.body).toHaveLength(2);
    for (const [i, [robot, path, content, name]] of [
      ['robot01', '/tmp/test.txt', 'file a', 'a.txt'],
      ['robot02', '/opt/app/b.bin', 'file b', 'b.bin'],
    ].entries()) {
      const item = r.body[i];
      expect(item).toMatchObject({ s3_bucket: 'files', robot_id: robot, deploy_path: path, filename: name, state: 'PENDING', error_msg: null });
      expect(item.job_id).toMatch(UUID);
      const job = await h.db.models.OtaJob.findById(item.job_id).lean();
      expect(job).toMatchObject({
        status: 'PENDING',
        robot_id: robot,
        deploy_path: path,
        s3_bucket: 'files',
        s3_object_name: item.s3_object_name,
        sha256: sha256(content),
        size: content.length,
        workflow_id: await workflowOf(item.job_id),
        error_msg: null,
      });
      expect(job!.deploy_msg).toBe(
        `{"job_id": "${item.job_id}", "s3_bucket": "files", "s3_object_name": "${item.s3_object_name}", "deploy_path": "${path}"}`,
      );
      expect(await h.db.models.OtaFile.exists({ s3_object_name: item.s3_object_name })).not.toBeNull();
      await expectWorkflowStarted(item.job_id, robot);
    }
  });

  it('passes timeout_s (query or form field) to the job and the workflow', async () => {
    const q = await request<FileDeployResult[]>(h, 'POST', '/file/deploy?timeout_s=90', {
      body: form([fileInfoList([{ robot_id: 'robot01', deploy_path: '/tmp/t1' }]), filePart('t')]),
    });
    expect(q.status).toBe(200);
    await expectWorkflowStarted(q.body[0].job_id, 'robot01', 90);
    const f = await request<FileDeployResult[]>(h, 'POST', '/file/deploy', {
      body: form([fileInfoList([{ robot_id: 'robot01', deploy_path: '/tmp/t2' }]), filePart('t'), { name: 'timeout_s', value: '120' }]),
    });
    expect(f.status).toBe(200);
    expect((await h.db.models.OtaJob.findById(f.body[0].job_id).lean())?.timeout_s).toBe(120);
    await expectWorkflowStarted(f.body[0].job_id, 'robot01', 120);
  });

  it('answers 400 on a count mismatch and leaves nothing behind (S3, files, jobs)', async () => {
    const name = uniqueName('deploy-mismatch');
    const before = await leftovers(name);
    const items = [{ robot_id: 'robot01', deploy_path: '/tmp/x' }];
    const more = await request(h, 'POST', '/file/deploy', { body: form([fileInfoList(items), filePart('a', name), filePart('b', name)]) });
    expect(more).toMatchObject({ status: 400, body: { detail: 'Number of files and file info do not match.' } });
    const fewer = await request(h, 'POST', '/file/deploy', { body: form([fileInfoList([...items, ...items]), filePart('a', name)]) });
    expect(fewer).toMatchObject({ status: 400, body: { detail: 'Number of files and file info do not match.' } });
    expect(await leftovers(name)).toEqual({ ...before, keys: [] });
  });

  it.each([
    [{ deploy_path: '/tmp/x' }, 'file_info_list.file_list.0.robot_id: Field required'],
    [{ robot_id: '', deploy_path: '/tmp/x' }, 'file_info_list.file_list.0.robot_id: Field required'],
    [{ robot_id: 'robot01' }, 'file_info_list.file_list.0.deploy_path: is required'],
    [{ robot_id: 'robot01', deploy_path: 'relative.txt' }, 'file_info_list.file_list.0.deploy_path: must be an absolute path'],
    [{ robot_id: 'robot01', deploy_path: '/tmp/../etc/passwd' }, 'file_info_list.file_list.0.deploy_path: must not contain ".." segments'],
    [{ robot_id: 'bad/robot', deploy_path: '/tmp/x' }, expect.stringMatching(/^file_info_list\.file_list\.0\.robot_id: /)],
  ])('answers 400 for %j and stores nothing', async (item, detail) => {
    const name = uniqueName('deploy-invalid');
    const before = await leftovers(name);
    const r = await request(h, 'POST', '/file/deploy', { body: form([fileInfoList([item]), filePart('a', name)]) });
    expect(r).toMatchObject({ status: 400, body: { detail } });
    expect(await leftovers(name)).toEqual({ ...before, keys: [] });
  });
});

describe('POST /file/deploy_from_s3', () => {
  let withPath: FileDeployResult;
  let noPath: FileDeployResult;
  beforeAll(async () => {
    [withPath, noPath] = await upload([{ deploy_path: '/tmp/default.txt' }, {}], ['with path', 'no path']);
  });

  it('deploys with the given path and answers the reference fields', async () => {
    const r = await deployFromS3({ robot_id: 'robot01', s3_bucket: 'files', s3_object_name: withPath.s3_object_name, deploy_path: '/tmp/deploy' });
    expect(r.status).toBe(200);
    expect(r.body).toEqual({
      s3_bucket: 'files',
      s3_object_name: withPath.s3_object_name,
      robot_id: 'robot01',
      deploy_path: '/tmp/deploy',
      filename: 'test.txt',
      state: 'PENDING',
      error_msg: null,
      job_id: expect.stringMatching(UUID),
      sha256: sha256('with path'),
      size: 9,
    });
    await expectWorkflowStarted(r.body.job_id, 'robot01');
    // The override is for this job only.
    expect((await h.db.models.OtaFile.findOne({ s3_object_name: withPath.s3_object_name }).lean())?.deploy_path).toBe('/tmp/default.txt');
  });

  it("falls back to the file's deploy_path", async () => {
    const r = await deployFromS3({ robot_id: 'robot02', s3_object_name: withPath.s3_object_name });
    expect(r.status).toBe(200);
    expect(r.body.deploy_path).toBe('/tmp/default.txt');
    expect((await h.db.models.OtaJob.findById(r.body.job_id).lean())?.deploy_path).toBe('/tmp/default.txt');
  });

  it('answers 400 without robot_id or any deploy_path, 404 for an unknown file, and creates no job', async () => {
    const jobs = await h.db.models.OtaJob.countDocuments({});
    expect(await deployFromS3({ s3_bucket: 'files', s3_object_name: withPath.s3_object_name, deploy_path: '/tmp/x' })).toMatchObject({
      status: 400,
      body: { detail: 'robot_id: Field required' },
    });
    expect(await deployFromS3({ robot_id: 'robot01', s3_object_name: noPath.s3_object_name })).toMatchObject({
      status: 400,
      body: { detail: 'deploy_path: Field required (the file has no default deploy_path)' },
    });
    expect(await deployFromS3({ robot_id: 'robot01', s3_object_name: withPath.s3_object_name, deploy_path: 'rel' })).toMatchObject({ status: 400 });
    expect(await deployFromS3({ robot_id: 'robot01', s3_bucket: 'files', s3_object_name: 'nope', deploy_path: '/tmp/x' })).toMatchObject({
      status: 404,
      body: { detail: 'File not found' },
    });
    expect(await h.db.models.OtaJob.countDocuments({})).toBe(jobs);
  });

  it('refuses an invalidated file with 409 until it is validated again', async () => {
    const q = `s3_bucket=files&s3_object_name=${encodeURIComponent(noPath.s3_object_name)}`;
    await request(h, 'PUT', `/file/invalidate?${q}`);
    const refused = await deployFromS3({ robot_id: 'robot01', s3_object_name: noPath.s3_object_name, deploy_path: '/tmp/x' });
    expect(refused.status).toBe(409);
    await request(h, 'PUT', `/file/validate?${q}`);
    expect((await deployFromS3({ robot_id: 'robot01', s3_object_name: noPath.s3_object_name, deploy_path: '/tmp/x' })).status).toBe(200);
  });

  it('answers 404 when the row exists but the object is gone from S3', async () => {
    const [gone] = await upload([{}], ['soon gone']);
    await h.s3.send(new DeleteObjectCommand({ Bucket: 'files', Key: gone.s3_object_name }));
    const r = await deployFromS3({ robot_id: 'robot01', s3_object_name: gone.s3_object_name, deploy_path: '/tmp/x' });
    expect(r).toMatchObject({ status: 404, body: { detail: 'File not found in storage' } });
  });

  it('answers each request of a burst on its own: bad ones refused naming their field, good ones stored and visible', async () => {
    // Sent together, these reach one batch of the object (deploy-batcher.ts checks its requests in its commit):
    // a refusal must fail only its own request.
    const [f] = await upload([{}], ['burst']);
    const jobs = await h.db.models.OtaJob.countDocuments({});
    const object = f.s3_object_name;
    const answers = await Promise.all([
      deployFromS3({ robot_id: 'robot01', s3_object_name: object, deploy_path: '/tmp/burst' }),
      deployFromS3({ robot_id: 'robot77', s3_object_name: object, deploy_path: '/tmp/burst' }),
      deployFromS3({ robot_id: 'robot02', s3_object_name: object, deploy_path: '/tmp/burst' }),
      deployFromS3({ robot_id: 'robot03', s3_object_name: object, deploy_path: 'relative/path' }),
      deployFromS3({ robot_id: 'robot03', s3_object_name: object, deploy_path: '/etc/burst' }),
      deployFromS3({ robot_id: 'robot03', s3_object_name: `${object}-missing`, deploy_path: '/tmp/burst' }),
      deployFromS3({ robot_id: 'robot03', s3_object_name: object, deploy_path: '/tmp/burst' }),
    ]);
    expect(answers[1]).toMatchObject({ status: 400, body: { detail: expect.stringMatching(/^robot_id: robot robot77 is not provisioned/) } });
    expect(answers[3]).toMatchObject({ status: 400, body: { detail: expect.stringMatching(/^deploy_path: /) } });
    expect(answers[4]).toMatchObject({ status: 400, body: { detail: expect.stringMatching(/^deploy_path: \/etc\/burst is outside robot robot03's deploy roots/) } });
    expect(answers[5]).toMatchObject({ status: 404, body: { detail: 'File not found' } });
    for (const [i, robot] of [[0, 'robot01'], [2, 'robot02'], [6, 'robot03']] as const) {
      expect(answers[i]).toMatchObject({ status: 200, body: { robot_id: robot, s3_object_name: object, deploy_path: '/tmp/burst', state: 'PENDING', sha256: sha256('burst') } });
      await expectWorkflowStarted(answers[i].body.job_id, robot);
      const state = await request<JobState>(h, 'GET', `/job_state/${answers[i].body.job_id}`);
      expect(state).toMatchObject({ status: 200, body: { job_id: answers[i].body.job_id, robot_id: robot, status: 'PENDING', s3_object_name: object } });
    }
    // Only the three accepted requests left jobs.
    expect(await h.db.models.OtaJob.countDocuments({})).toBe(jobs + 3);
  });
});

describe('GET /job_state/{job_id}', () => {
  it('returns the reference fields from the database plus ours', async () => {
    const [f] = await upload([{}], ['state']);
    const d = await deployFromS3({ robot_id: 'robot03', s3_object_name: f.s3_object_name, deploy_path: '/tmp/s' });
    const r = await request<JobState>(h, 'GET', `/job_state/${d.body.job_id}`);
    expect(r.status).toBe(200);
    expect(r.body).toEqual({
      job_id: d.body.job_id,
      status: 'PENDING',
      robot_id: 'robot03',
      deploy_path: '/tmp/s',
      deploy_msg: `{"job_id": "${d.body.job_id}", "s3_bucket": "files", "s3_object_name": "${f.s3_object_name}", "deploy_path": "/tmp/s"}`,
      timestamp: expect.any(String),
      error_msg: null,
      // No worker polls the test queue: the live query times out and the answer comes from the database alone.
      progress: null,
      robot_online: null,
      updated_at: expect.any(String),
      finished_at: null,
      s3_bucket: 'files',
      s3_object_name: f.s3_object_name,
      file_name: 'test.txt',
      sha256: sha256('state'),
      size: 5,
      workflow_id: expect.stringMatching(/^ota-rollout-singles-/),
      timeout_s: null,
      transitions: [], // nothing has changed since PENDING
    });
  });

  it('answers 404 for an unknown job (the reference answered 500)', async () => {
    expect(await request(h, 'GET', '/job_state/00000000-0000-4000-8000-000000000000')).toMatchObject({ status: 404, body: { detail: 'Job not found' } });
  });
});

describe('GET /jobs', () => {
  const robot = uniqueId('pager').slice(0, 40);
  let created: string[] = [];
  beforeAll(async () => {
    const [f] = await upload([{ deploy_path: '/tmp/p' }], ['page']);
    await recordRobots(h.db.models, [{ id: robot, roots: ['/tmp'] }]);
    created = [];
    for (let i = 0; i < 5; i++) {
      const r = await deployFromS3({ robot_id: robot, s3_object_name: f.s3_object_name });
      expect(r.status).toBe(200);
      created.push(r.body.job_id);
    }
  });

  it('pages through a robot\'s jobs newest first without gaps or repeats', async () => {
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const r: { status: number; body: { jobs: JobState[]; next_cursor: string | null } } = await request(
        h,
        'GET',
        `/jobs?robot_id=${robot}&limit=2${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`,
      );
      expect(r.status).toBe(200);
      expect(r.body.jobs.length).toBeLessThanOrEqual(2);
      seen.push(...r.body.jobs.map((j) => j.job_id));
      cursor = r.body.next_cursor;
      pages++;
    } while (cursor);
    expect(pages).toBe(3);
    expect(seen).toEqual([...created].reverse());
  });

  it('filters by status and validates its parameters', async () => {
    await h.db.models.OtaJob.updateOne({ _id: created[1] }, { $set: { status: 'FAILED' } });
    const r = await request<{ jobs: JobState[]; next_cursor: string | null }>(h, 'GET', `/jobs?robot_id=${robot}&status=FAILED`);
    expect(r.body).toEqual({ jobs: [expect.objectContaining({ job_id: created[1], status: 'FAILED' })], next_cursor: null });
    // Blank values (a form submitting empty fields) mean "not given".
    const blank = await request<{ jobs: JobState[] }>(h, 'GET', '/jobs?robot_id=&status=&limit=&cursor=');
    expect(blank.status).toBe(200);
    expect(blank.body.jobs.map((j) => j.job_id)).toEqual(expect.arrayContaining(created));
    expect((await request(h, 'GET', '/jobs?status=WHATEVER')).status).toBe(422);
    expect((await request(h, 'GET', '/jobs?limit=0')).status).toBe(422);
    expect((await request(h, 'GET', '/jobs?cursor=garbage')).status).toBe(400);
  });
});

describe('POST /job/{job_id}/cancel', () => {
  let job: string;
  beforeAll(async () => {
    const [f] = await upload([{}], ['cancel me']);
    job = (await deployFromS3({ robot_id: 'robot01', s3_object_name: f.s3_object_name, deploy_path: '/tmp/c' })).body.job_id;
  });

  it("signals the job's cancel to its batch's workflow and answers 202", async () => {
    const r = await request(h, 'POST', `/job/${job}/cancel`, { body: JSON.stringify({ reason: 'operator changed mind' }), headers: { 'content-type': 'application/json' } });
    expect(r).toMatchObject({ status: 202, body: { job_id: job, status: 'PENDING', cancel_requested: true } });
    const history = await h.temporal.getHandle(await workflowOf(job)).fetchHistory();
    const signals = (history.events ?? []).filter((e) => e.workflowExecutionSignaledEventAttributes);
    expect(signals.map((e) => e.workflowExecutionSignaledEventAttributes?.signalName)).toEqual(['cancelRolloutJobs']);
    const payload = signals[0].workflowExecutionSignaledEventAttributes!.input!.payloads![0];
    expect(defaultPayloadConverter.fromPayload(payload)).toEqual({ jobIds: [job], reason: 'operator changed mind' });
  });

  it('signals cancelJob to a job with its own workflow (a deploy with a timeout)', async () => {
    const [f] = await upload([{}], ['cancel timed']);
    const timed = (await deployFromS3({ robot_id: 'robot01', s3_object_name: f.s3_object_name, deploy_path: '/tmp/ct', timeout_s: '600' })).body.job_id;
    const r = await request(h, 'POST', `/job/${timed}/cancel`, { body: JSON.stringify({ reason: 'not now' }), headers: { 'content-type': 'application/json' } });
    expect(r).toMatchObject({ status: 202, body: { job_id: timed, status: 'PENDING', cancel_requested: true } });
    const history = await h.temporal.getHandle(otaWorkflowId(timed)).fetchHistory();
    const signals = (history.events ?? []).filter((e) => e.workflowExecutionSignaledEventAttributes);
    expect(signals.map((e) => e.workflowExecutionSignaledEventAttributes?.signalName)).toEqual(['cancelJob']);
    expect(defaultPayloadConverter.fromPayload(signals[0].workflowExecutionSignaledEventAttributes!.input!.payloads![0])).toEqual({ reason: 'not now' });
  });

  it('answers 422 naming the field for an invalid body, and signals nothing', async () => {
    const [f] = await upload([{}], ['cancel body']);
    const id = (await deployFromS3({ robot_id: 'robot01', s3_object_name: f.s3_object_name, deploy_path: '/tmp/cb' })).body.job_id;
    const json = { 'content-type': 'application/json' };
    for (const body of [{ reason: 42 }, { reason: null }, { reason: 'x'.repeat(501) }]) {
      const r = await request<{ detail: string }>(h, 'POST', `/job/${id}/cancel`, { body: JSON.stringify(body), headers: json });
      expect({ body, status: r.status, detail: r.body.detail }).toEqual({ body, status: 422, detail: expect.stringMatching(/^reason: /) });
    }
    const notObject = await request<{ detail: string }>(h, 'POST', `/job/${id}/cancel`, { body: '["stop"]', headers: json });
    expect(notObject.status).toBe(422);
    const history = await h.temporal.getHandle(await workflowOf(id)).fetchHistory();
    expect((history.events ?? []).filter((e) => e.workflowExecutionSignaledEventAttributes)).toEqual([]);
    expect((await h.db.models.OtaJob.findById(id).lean())?.status).toBe('PENDING');
    // An empty body (no reason) is still accepted.
    expect((await request(h, 'POST', `/job/${id}/cancel`)).status).toBe(202);
  });

  it('answers 404 for an unknown job', async () => {
    expect(await request(h, 'POST', '/job/00000000-0000-4000-8000-000000000000/cancel')).toMatchObject({ status: 404, body: { detail: 'Job not found' } });
  });

  it('answers 409 for a terminal job and for a job whose workflow has ended', async () => {
    await h.db.models.OtaJob.updateOne({ _id: job }, { $set: { status: 'COMPLETED' } });
    expect(await request(h, 'POST', `/job/${job}/cancel`)).toMatchObject({ status: 409, body: { detail: 'Job is already COMPLETED.' } });
    await h.db.models.OtaJob.updateOne({ _id: job }, { $set: { status: 'RECEIVED' } });
    await h.temporal.getHandle(await workflowOf(job)).terminate('test: workflow gone');
    expect(await request(h, 'POST', `/job/${job}/cancel`)).toMatchObject({ status: 409, body: { detail: 'Job has no running workflow.' } });
  });
});

describe('GET /deploy_state/{robot_id}', () => {
  it("lists what the cloud believes is on the robot, [] for an unknown robot", async () => {
    await h.db.models.DeployTarget.create({
      _id: 'robot-ds:/tmp/a',
      robot_id: 'robot-ds',
      deploy_path: '/tmp/a',
      s3_bucket: 'files',
      s3_object_name: 'obj',
      sha256: 'ab',
      job_id: 'j1',
      updated_at: new Date(),
    });
    const r = await request(h, 'GET', '/deploy_state/robot-ds');
    expect(r).toMatchObject({
      status: 200,
      body: [{ robot_id: 'robot-ds', deploy_path: '/tmp/a', s3_bucket: 'files', s3_object_name: 'obj', version: 'v1', sha256: 'ab', job_id: 'j1' }],
    });
    expect((await request(h, 'GET', '/deploy_state/nobody')).body).toEqual([]);
  });
});

describe('when the workflow cannot be started', () => {
  let broken: Harness;
  beforeAll(async () => {
    broken = await startHarness({ namespace: 'no-such-namespace-for-api-tests' });
  });
  afterAll(async () => {
    await broken?.close();
  });

  it('marks the job FAILED with the reason and answers 5xx (deploy_from_s3)', async () => {
    const up = await request<FileDeployResult[]>(broken, 'POST', '/file/upload', { body: form([fileInfoList([{}]), filePart('x')]) });
    const r = await request<{ detail: string; job_id: string }>(
      broken,
      'POST',
      `/file/deploy_from_s3?robot_id=robot01&s3_object_name=${encodeURIComponent(up.body[0].s3_object_name)}&deploy_path=/tmp/x`,
    );
    expect(r.status).toBeGreaterThanOrEqual(500);
    expect(r.body.detail).toMatch(/^could not start the deployment workflow/);
    const job = await broken.db.models.OtaJob.findById(r.body.job_id).lean();
    expect(job).toMatchObject({ status: 'FAILED', error_msg: r.body.detail, finished_at: expect.any(Date) });
  });

  it('marks the jobs FAILED and answers 5xx with the per-item list (deploy); the files stay', async () => {
    const r = await request<{ detail: FileDeployResult[] }>(broken, 'POST', '/file/deploy', {
      body: form([fileInfoList([{ robot_id: 'robot01', deploy_path: '/tmp/x' }]), filePart('y')]),
    });
    expect(r.status).toBeGreaterThanOrEqual(500);
    expect(r.body.detail).toEqual([expect.objectContaining({ state: 'FAILED', error_msg: expect.stringMatching(/^could not start/), job_id: expect.stringMatching(UUID) })]);
    expect((await broken.db.models.OtaJob.findById(r.body.detail[0].job_id).lean())?.status).toBe('FAILED');
    expect(await broken.db.models.OtaFile.exists({ s3_object_name: r.body.detail[0].s3_object_name })).not.toBeNull();
  });

  it('reports Temporal as down in /health with 503', async () => {
    const r = await request<{ dependencies: Record<string, string> }>(broken, 'GET', '/health', { auth: false });
    expect(r.status).toBe(503);
    expect(r.body.dependencies).toEqual({ mongo: 'ok', s3: 'ok', temporal: expect.stringMatching(/^error: /) });
  });
});
