// The otaDeployment activities against the real servers: FerretDB (guarded status writes, deploy targets),
// Mosquitto (what a robot receives, QoS 1, message expiry, ACL refusals) and versitygw (the presigned URL works).
import { parsePublicKeys, verifyDeploy } from '../../common/signing';
import { loadSigningKeys, newestSigningKey, publicKeyEntries } from '../../common/signing-keys';
import crypto from 'node:crypto';
import { PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { ApplicationFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import type { IPublishPacket, MqttClient } from 'mqtt';
import { createOtaJobActivities, deployTargetId } from '../../activities/db/ota-jobs';
import { connectMqtt, MqttPublishError, publishQos1, uniqueClientId } from '../../activities/mqtt/connection';
import { createOtaMqttActivities, OTA_JOB_NOT_FOUND } from '../../activities/mqtt/ota';
import { createOtaRolloutActivities } from '../../activities/mqtt/ota-rollout';
import { batchDocument, SINGLES_PREFIX } from '../../api/ota/deploy-batcher';
import { buildJob } from '../../common/ota-job-doc';
import { rolloutWorkflowId, type WaveCounts } from '../../workflows/ota-rollout-contract';
import { createS3Client } from '../../activities/s3/client';
import { DB_COMMAND_REFUSED, DbTimeoutError, withDbTimeout } from '../../activities/db/timeout';
import { connectDb, type Db } from '../../common/db';
import { deployMessageSchema, isTerminal, JOB_STATUSES, topics, type JobStatus } from '../../common/protocol';
import { isTerminalStatus } from '../../workflows/ota-status';
import { cfg, eventually, uniqueId } from '../helpers';

const TEST_DB = 'fleet_test_ota_activities';
const bucket = cfg.s3.buckets[0];

let db: Db;
let s3: S3Client;
let cloud: MqttClient; // the activities' client
let listener: MqttClient; // plays the robot: sees what the cloud publishes
const received: { topic: string; payload: string; packet: IPublishPacket }[] = [];

beforeAll(async () => {
  db = await connectDb(cfg, TEST_DB);
  s3 = createS3Client(cfg);
  cloud = await connectMqtt(cfg, { clientId: uniqueClientId('test-ota-acts') });
  listener = await connectMqtt(cfg, { clientId: uniqueClientId('test-ota-listener') });
  listener.on('message', (topic, payload, packet) => received.push({ topic, payload: payload.toString(), packet }));
  await listener.subscribeAsync('ota/+/+', { qos: 1 });
});

afterAll(async () => {
  await Promise.allSettled([cloud?.endAsync(), listener?.endAsync(), db?.connection.dropDatabase().then(() => db.close())]);
  s3?.destroy();
});

const activityEnv = () => new MockActivityEnvironment();
const mqttActivities = () => createOtaMqttActivities({ mqtt: cloud, models: db.models, s3, cfg });
const jobActivities = () => createOtaJobActivities({ models: db.models, dbTimeoutMs: cfg.mongo.timeoutMs });
const sha256 = (b: Buffer) => crypto.createHash('sha256').update(b).digest('hex');

async function createJob(robotId: string, opts: { status?: JobStatus; body?: Buffer; mode?: number } = {}) {
  const body = opts.body ?? crypto.randomBytes(64 * 1024);
  const key = `${uniqueId('obj')}.bin`;
  await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }));
  const jobId = uniqueId('job');
  const now = new Date();
  await db.models.OtaJob.create({
    _id: jobId,
    robot_id: robotId,
    deploy_path: '/opt/app/model.bin',
    s3_bucket: bucket,
    s3_object_name: key,
    sha256: sha256(body),
    size: body.length,
    mode: opts.mode,
    status: opts.status ?? 'PENDING',
    deploy_msg: JSON.stringify({ job_id: jobId, s3_bucket: bucket, s3_object_name: key, deploy_path: '/opt/app/model.bin' }),
    timestamp: now,
    updated_at: now,
    workflow_id: `ota-job-${jobId}`,
  });
  return { jobId, key, body };
}

const setPresence = (robotId: string, online: boolean) =>
  db.models.RobotPresence.updateOne({ _id: robotId }, { $set: { online, changed_at: new Date() } }, { upsert: true });

test('the workflow-side terminal set matches the protocol', () => {
  for (const s of JOB_STATUSES) expect(isTerminalStatus(s)).toBe(isTerminal(s));
});

test('dispatchDeploy: robot never seen or offline → robot_offline and nothing is published', async () => {
  const robotId = uniqueId('rb-off');
  const { jobId } = await createJob(robotId);
  expect(await activityEnv().run(mqttActivities().dispatchDeploy, jobId)).toBe('robot_offline');
  await setPresence(robotId, false);
  expect(await activityEnv().run(mqttActivities().dispatchDeploy, jobId)).toBe('robot_offline');
  await new Promise((r) => setTimeout(r, 500));
  expect(received.filter((m) => m.topic.startsWith(`ota/${robotId}/`))).toEqual([]);
});

test('dispatchDeploy: online robot receives a valid deploy message whose short-lived URL downloads the file', async () => {
  const robotId = uniqueId('rb-on');
  const { jobId, key, body } = await createJob(robotId, { mode: 0o640 });
  await setPresence(robotId, true);
  // The result is a bare status: the URL (a bearer credential) never reaches workflow history.
  expect(await activityEnv().run(mqttActivities().dispatchDeploy, jobId)).toBe('dispatched');

  const msg = await eventually('deploy message', async () => received.find((m) => m.topic === topics.deploy(robotId)));
  expect(msg.packet.qos).toBe(1);
  // MQTT 5 expiry: the broker drops the message if the robot does not pick it up while the URL is valid.
  expect(msg.packet.properties?.messageExpiryInterval).toBeGreaterThan(3500);
  expect(msg.packet.properties?.messageExpiryInterval).toBeLessThanOrEqual(3600);
  const deploy = deployMessageSchema.parse(JSON.parse(msg.payload));
  expect(deploy).toMatchObject({
    job_id: jobId,
    s3_bucket: bucket,
    s3_object_name: key,
    deploy_path: '/opt/app/model.bin',
    sha256: sha256(body),
    size: body.length,
    mode: 0o640,
  });
  // Signed with the cloud's newest key, for this robot, job, content and path, valid as long as the message.
  const keys = loadSigningKeys(cfg);
  expect(deploy.signature?.key_id).toBe(newestSigningKey(keys).id);
  expect(verifyDeploy(parsePublicKeys(publicKeyEntries(keys)), robotId, deploy)).toBeNull();
  expect(verifyDeploy(parsePublicKeys(publicKeyEntries(keys)), `${robotId}-other`, deploy)).toMatch(/does not match/);
  expect(deploy.signature!.expires_at - Date.now() / 1000).toBeGreaterThan(3500);
  const url = new URL(deploy.url!);
  expect(url.searchParams.get('X-Amz-Expires')).toBe('3600');
  const res = await fetch(url);
  expect(res.status).toBe(200);
  expect(sha256(Buffer.from(await res.arrayBuffer()))).toBe(deploy.sha256);
});

test('dispatchDeploy with the fields the workflow carries publishes the same message without reading the job', async () => {
  const robotId = uniqueId('rb-fields');
  const { jobId, key, body } = await createJob(robotId, { mode: 0o600 });
  await setPresence(robotId, true);
  const fields = { s3_bucket: bucket, s3_object_name: key, deploy_path: '/opt/app/model.bin', sha256: sha256(body), size: body.length, mode: 0o600 };
  // The document is gone: a dispatch that still read it would fail (OtaJobNotFound).
  await db.models.OtaJob.deleteOne({ _id: jobId });
  expect(await activityEnv().run(mqttActivities().dispatchDeploy, jobId, robotId, fields)).toBe('dispatched');
  const msg = await eventually('deploy message', async () => received.find((m) => m.topic === topics.deploy(robotId)));
  const deploy = deployMessageSchema.parse(JSON.parse(msg.payload));
  expect(deploy).toMatchObject({ job_id: jobId, ...fields });
  expect(verifyDeploy(parsePublicKeys(publicKeyEntries(loadSigningKeys(cfg))), robotId, deploy)).toBeNull();
  const res = await fetch(new URL(deploy.url!));
  expect(sha256(Buffer.from(await res.arrayBuffer()))).toBe(deploy.sha256);
});

test('dispatchDeploy: an unknown job fails non-retryably', async () => {
  const err = await activityEnv()
    .run(mqttActivities().dispatchDeploy, uniqueId('missing'))
    .then(
      () => null,
      (e: unknown) => e,
    );
  expect(err).toBeInstanceOf(ApplicationFailure);
  expect((err as ApplicationFailure).type).toBe(OTA_JOB_NOT_FOUND);
  expect((err as ApplicationFailure).nonRetryable).toBe(true);
});

/** A batch of single deploys as the API stores it (api/ota/deploy-batcher.ts): its jobs, queued, and its document. */
async function storeSinglesBatch(robotIds: string[]) {
  const body = crypto.randomBytes(16 * 1024);
  const key = `${uniqueId('obj')}.bin`;
  await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }));
  const batchId = `${SINGLES_PREFIX}${crypto.randomUUID()}`;
  const now = new Date();
  const file = { s3_bucket: bucket, s3_object_name: key, file_name: 'f.bin', sha256: sha256(body), size: body.length };
  const jobs = robotIds.map((robotId, seq) => ({
    ...buildJob({ robotId, deployPath: '/opt/app/f.bin', file, timeoutS: null, deploymentId: batchId, workflowId: rolloutWorkflowId(batchId) }, now),
    wave: 0,
    seq,
    dispatch_state: 'queued' as const,
  }));
  await db.models.OtaJob.insertMany(jobs);
  await db.models.OtaRollout.create(batchDocument(batchId, jobs, now));
  return { batchId, jobs };
}

/** The counts a batch's run starts from when the API stored its `n` jobs just before starting it. */
const freshCounts = (n: number): WaveCounts[] => [{ size: n, status: { PENDING: n }, queued: n, awaitingRobot: 0, inFlight: 0 }];

test("dispatchRolloutBatch, a batch's first dispatch (fresh): every stored job is sent and the counts given are moved", async () => {
  const robots = [uniqueId('rb-b1'), uniqueId('rb-b2'), uniqueId('rb-b3')];
  for (const r of robots) await setPresence(r, true);
  const { batchId, jobs } = await storeSinglesBatch(robots);
  const acts = createOtaRolloutActivities({ mqtt: cloud, models: db.models, s3, cfg });
  const out = await activityEnv().run(acts.dispatchRolloutBatch, batchId, 0, 3, freshCounts(3), true);
  expect(out).toEqual({ dispatched: 3, awaitingRobot: 0, counts: [{ size: 3, status: { PENDING: 3 }, queued: 0, awaitingRobot: 0, inFlight: 3 }], moved: true });
  for (const [i, r] of robots.entries()) {
    const msg = await eventually(`deploy message for ${r}`, async () => received.find((m) => m.topic === topics.deploy(r)));
    expect(deployMessageSchema.parse(JSON.parse(msg.payload)).job_id).toBe(jobs[i]._id);
  }
  expect((await db.models.OtaRollout.findById(batchId).lean())?.dispatch_cursor).toBe(2);
});

test('dispatchRolloutBatch, fresh, with a job canceled before the run started: the counts are read, not moved (no phantom queued job)', async () => {
  const robots = [uniqueId('rb-c1'), uniqueId('rb-c2'), uniqueId('rb-c3')];
  for (const r of robots) await setPresence(r, true);
  const { batchId, jobs } = await storeSinglesBatch(robots);
  // What the API's cancel does to a PENDING job whose batch workflow is not running yet (cancelOrphanJob).
  await db.models.OtaJob.updateOne({ _id: jobs[1]._id }, { $set: { status: 'CANCELED', finished_at: new Date() } });
  const acts = createOtaRolloutActivities({ mqtt: cloud, models: db.models, s3, cfg });
  const out = await activityEnv().run(acts.dispatchRolloutBatch, batchId, 0, 3, freshCounts(3), true);
  expect(out).toEqual({ dispatched: 2, awaitingRobot: 0, counts: [{ size: 3, status: { PENDING: 2, CANCELED: 1 }, queued: 0, awaitingRobot: 0, inFlight: 2 }], moved: false });
  await eventually('deploy messages', async () => robots.filter((r) => received.some((m) => m.topic === topics.deploy(r))).length === 2);
  expect(received.some((m) => m.topic === topics.deploy(robots[1]))).toBe(false);
});

test('publishAck / publishCancel send the bare job id on the robot topics', async () => {
  const robotId = uniqueId('rb-ack');
  const acts = mqttActivities();
  await activityEnv().run(acts.publishCancel, robotId, 'job-123');
  await activityEnv().run(acts.publishAck, robotId, 'job-123');
  const got = await eventually('ack and cancel', async () => {
    const mine = received.filter((m) => m.topic.startsWith(`ota/${robotId}/`));
    return mine.length >= 2 ? mine : null;
  });
  expect(got.map((m) => [m.topic, m.payload, m.packet.qos])).toEqual([
    [topics.cancel(robotId), 'job-123', 1],
    [topics.ack(robotId), 'job-123', 1],
  ]);
});

test('publishQos1 rejects when the broker refuses the publish (reason code >= 0x80)', async () => {
  // The cloud user's ACL covers ota/# only: Mosquitto answers PUBACK 0x87 (not authorised).
  const err = await publishQos1(cloud, 'not-ota/x', 'hello').then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(MqttPublishError);
  expect((err as MqttPublishError).reasonCode).toBe(0x87);
});

test('recordJobStatus: forward only, idempotent, terminal is final, COMPLETED records the deploy target', async () => {
  const robotId = uniqueId('rb-db');
  const { jobId, key, body } = await createJob(robotId);
  const record = (status: JobStatus, msg: string | null = null) => activityEnv().run(jobActivities().recordJobStatus, jobId, status, msg);
  const stored = async () => (await db.models.OtaJob.findById(jobId).lean())!;

  expect(await record('DOWNLOADING')).toEqual({ applied: true, current: 'DOWNLOADING' });
  expect(await record('RECEIVED')).toEqual({ applied: false, current: 'DOWNLOADING' }); // late report: no rollback
  expect(await record('DOWNLOADING')).toEqual({ applied: true, current: 'DOWNLOADING' }); // retry: no-op
  expect((await stored()).finished_at).toBeNull();

  expect(await record('COMPLETED')).toEqual({ applied: true, current: 'COMPLETED' });
  const done = await stored();
  expect(done.status).toBe('COMPLETED');
  expect(done.finished_at).toBeInstanceOf(Date);
  const target = await db.models.DeployTarget.findById(deployTargetId(robotId, '/opt/app/model.bin')).lean();
  expect(target).toMatchObject({ robot_id: robotId, s3_bucket: bucket, s3_object_name: key, sha256: sha256(body), job_id: jobId });

  // A retried COMPLETED changes nothing (finished_at kept); nothing moves a terminal job.
  expect(await record('COMPLETED')).toEqual({ applied: true, current: 'COMPLETED' });
  expect((await stored()).finished_at).toEqual(done.finished_at);
  expect(await record('FAILED', 'late')).toEqual({ applied: false, current: 'COMPLETED' });
  expect(await record('CANCELED', 'late')).toEqual({ applied: false, current: 'COMPLETED' });
  expect((await stored()).status).toBe('COMPLETED');

  expect(await activityEnv().run(jobActivities().recordJobStatus, uniqueId('missing'), 'RECEIVED' as JobStatus, null)).toEqual({
    applied: false,
    current: null,
  });
});

test('recordJobStatus: FAILED keeps the error message and writes no deploy target', async () => {
  const robotId = uniqueId('rb-fail');
  const { jobId } = await createJob(robotId);
  expect(await activityEnv().run(jobActivities().recordJobStatus, jobId, 'FAILED' as JobStatus, 'sha256 mismatch')).toEqual({ applied: true, current: 'FAILED' });
  expect(await db.models.OtaJob.findById(jobId).lean()).toMatchObject({ status: 'FAILED', error_msg: 'sha256 mismatch' });
  expect(await db.models.DeployTarget.countDocuments({ robot_id: robotId })).toBe(0);
});

test('recordJobStatus keeps every state change in the job history, once, even when several are stored together', async () => {
  const { jobId } = await createJob(uniqueId('rb-hist'));
  const run = (status: JobStatus, passed: JobStatus[] = []) => activityEnv().run(jobActivities().recordJobStatus, jobId, status, null, passed);
  expect(await run('RECEIVED')).toEqual({ applied: true, current: 'RECEIVED' });
  expect(await run('COMPLETED', ['DOWNLOADING'])).toEqual({ applied: true, current: 'COMPLETED' });
  expect(await run('COMPLETED', ['DOWNLOADING'])).toEqual({ applied: true, current: 'COMPLETED' }); // retried attempt
  const job = (await db.models.OtaJob.findById(jobId).lean())!;
  expect(job.transitions?.map((t) => t.status)).toEqual(['RECEIVED', 'DOWNLOADING', 'COMPLETED']);
});

test('finishJob stores the end with every status passed through, tells the robot to abort a cloud-ended job, then acks', async () => {
  const robotId = uniqueId('rb-finish');
  const { jobId } = await createJob(robotId);
  const finish = (status: JobStatus, msg: string | null, passed: JobStatus[]) => activityEnv().run(mqttActivities().finishJob, jobId, robotId, status, msg, passed);
  expect(await finish('CANCELED', 'canceled: wrong file', ['RECEIVED', 'DOWNLOADING'])).toEqual({ applied: true, current: 'CANCELED' });
  const job = (await db.models.OtaJob.findById(jobId).lean())!;
  expect(job).toMatchObject({ status: 'CANCELED', error_msg: 'canceled: wrong file' });
  expect(job.transitions?.map((t) => t.status)).toEqual(['RECEIVED', 'DOWNLOADING', 'CANCELED']);
  await eventually('cancel then ack', async () => {
    const mine = received.filter((m) => m.topic === topics.cancel(robotId) || m.topic === topics.ack(robotId));
    return mine.length === 2 && mine[0].topic === topics.cancel(robotId) && mine.every((m) => m.payload === jobId);
  });
  // A retry after a partial run stores nothing twice.
  expect(await finish('CANCELED', 'canceled: wrong file', ['RECEIVED', 'DOWNLOADING'])).toEqual({ applied: true, current: 'CANCELED' });
  expect((await db.models.OtaJob.findById(jobId).lean())!.transitions).toHaveLength(3);
});

test('retry only what can get better: a command the database refuses fails non-retryable, a timeout stays retryable', async () => {
  // FerretDB does not implement findAndModify with a projection: it refuses the command as such, every time.
  const refused = await withDbTimeout(
    'refused',
    5000,
    db.models.OtaJob.findOneAndUpdate({ _id: uniqueId('nope') }, { $set: { size: 1 } }, { projection: { size: 1 } }).lean(),
  ).then(
    () => null,
    (e: unknown) => e,
  );
  expect(refused).toBeInstanceOf(ApplicationFailure);
  expect(refused).toMatchObject({ nonRetryable: true, type: DB_COMMAND_REFUSED });
  const slow = await withDbTimeout('slow', 50, new Promise(() => undefined)).then(
    () => null,
    (e: unknown) => e,
  );
  expect(slow).toBeInstanceOf(DbTimeoutError);
  expect(slow).not.toBeInstanceOf(ApplicationFailure);
});
