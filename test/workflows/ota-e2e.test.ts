// The composition roots for real: workers/main.ts and workers/mqtt-bridge.ts run as processes against the
// shared stack; a scripted robot on the broker goes online, receives the deploy, downloads the file through the
// presigned URL, reports, and gets its ack. Everything else (API, daemon) is played by the test.
import crypto from 'node:crypto';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import type { MqttClient } from 'mqtt';
import { connectMqtt, uniqueClientId } from '../../activities/mqtt/connection';
import { createS3Client } from '../../activities/s3/client';
import { connectDb, type Db } from '../../common/db';
import { deployMessageSchema, topics, type DeployMessage } from '../../common/protocol';
import { otaDeployment } from '../../workflows/ota-deployment';
import { jobProgressQuery, otaWorkflowId } from '../../workflows/ota-contract';
import { JOB_STATE_SA, ROBOT_ID_SA } from '../../workflows/search-attributes';
import { cfg, eventually, runTs, temporalClient, uniqueId, type ChildHandle } from '../helpers';

const TEST_DB = 'fleet_test_ota_e2e';
const taskQueue = uniqueId('ota-e2e');
const bridgeClientId = uniqueClientId('test-e2e-bridge');
// The processes get their own database, task queue and bridge session: the shared stack's own worker and
// bridge (if running) never see this test's jobs.
const processEnv = { MONGO_DB: TEST_DB, TEMPORAL_TASK_QUEUE: taskQueue, MQTT_BRIDGE_CLIENT_ID: bridgeClientId, LOG_LEVEL: 'info' };

let db: Db;
let temporal: Awaited<ReturnType<typeof temporalClient>>;
let worker: ChildHandle;
let bridge: ChildHandle;
let robot: MqttClient | undefined;

beforeAll(async () => {
  db = await connectDb(cfg, TEST_DB);
  temporal = await temporalClient();
  worker = runTs('workers/main.ts', processEnv);
  bridge = runTs('workers/mqtt-bridge.ts', processEnv);
  await Promise.all([worker.waitForOutput('worker started', 90_000), bridge.waitForOutput('mqtt bridge started', 60_000)]);
}, 120_000);

afterAll(async () => {
  await Promise.allSettled([worker?.kill(), bridge?.kill(), robot?.endAsync()]);
  await db?.connection.dropDatabase();
  await Promise.allSettled([db?.close(), temporal?.close()]);
});

test('job for an offline robot: deployed when it comes online, downloaded, reported, stored, acked', async () => {
  const robotId = uniqueId('e2e-robot');
  const body = crypto.randomBytes(300 * 1024);
  const sha256 = crypto.createHash('sha256').update(body).digest('hex');
  const key = `${uniqueId('e2e')}.bin`;
  const s3 = createS3Client(cfg);
  await s3.send(new PutObjectCommand({ Bucket: cfg.s3.buckets[0], Key: key, Body: body }));
  s3.destroy();

  // What the API does: the job document, then the workflow with its search attributes.
  const jobId = crypto.randomUUID();
  const now = new Date();
  await db.models.OtaJob.create({
    _id: jobId,
    robot_id: robotId,
    deploy_path: '/opt/e2e/file.bin',
    s3_bucket: cfg.s3.buckets[0],
    s3_object_name: key,
    sha256,
    size: body.length,
    status: 'PENDING',
    deploy_msg: '{}',
    timestamp: now,
    updated_at: now,
    workflow_id: otaWorkflowId(jobId),
  });
  const handle = await temporal.client.workflow.start(otaDeployment, {
    taskQueue,
    workflowId: otaWorkflowId(jobId),
    args: [{ jobId, robotId }],
    typedSearchAttributes: [
      { key: ROBOT_ID_SA, value: robotId },
      { key: JOB_STATE_SA, value: 'PENDING' },
    ],
  });
  await eventually('waiting for the robot', async () => {
    const p = await handle.query(jobProgressQuery);
    return p.status === 'PENDING' && !p.robotOnline && p.dispatches === 0;
  });

  // The robot: subscribes to its topics, then announces itself (as the daemon does).
  const deploys: DeployMessage[] = [];
  const acks: string[] = [];
  robot = await connectMqtt(cfg, { clientId: uniqueClientId('test-e2e-robot') });
  robot.on('message', (topic, payload) => {
    if (topic === topics.deploy(robotId)) deploys.push(deployMessageSchema.parse(JSON.parse(payload.toString())));
    if (topic === topics.ack(robotId)) acks.push(payload.toString());
  });
  await robot.subscribeAsync([topics.deploy(robotId), topics.ack(robotId), topics.cancel(robotId)], { qos: 1 });
  try {
    await robot.publishAsync(topics.presence(robotId), 'online', { qos: 1, retain: true });

    const deploy = await eventually('deploy message', async () => deploys[0]);
    expect(deploy).toMatchObject({ job_id: jobId, s3_object_name: key, deploy_path: '/opt/e2e/file.bin', sha256, size: body.length });
    const res = await fetch(deploy.url!);
    const got = Buffer.from(await res.arrayBuffer());
    expect(crypto.createHash('sha256').update(got).digest('hex')).toBe(sha256);

    const report = (r: object) => robot!.publishAsync(topics.state(robotId), JSON.stringify({ [jobId]: r }), { qos: 1 });
    await report({ status: 'RECEIVED', error_msg: null });
    await report({ status: 'DOWNLOADING', error_msg: null, progress: 50 });
    await eventually('progress 50', async () => (await handle.query(jobProgressQuery)).progress === 50);
    await report({ status: 'COMPLETED', error_msg: null, progress: 100 });

    expect(await handle.result()).toEqual({ jobId, status: 'COMPLETED', error_msg: null, dispatches: 1 });
    await eventually('ack', async () => acks.includes(jobId));
    const job = await db.models.OtaJob.findById(jobId).lean();
    expect(job).toMatchObject({ status: 'COMPLETED', error_msg: null });
    expect(job?.finished_at).toBeInstanceOf(Date);
    expect(await db.models.DeployTarget.findById(`${robotId}:/opt/e2e/file.bin`).lean()).toMatchObject({ job_id: jobId, sha256 });
    expect((await handle.describe()).typedSearchAttributes.get(JOB_STATE_SA)).toBe('COMPLETED');
    // The presigned URL is a bearer credential: it is in neither the workflow history nor the processes' logs.
    const signature = new URL(deploy.url!).searchParams.get('X-Amz-Signature')!;
    expect(signature).toBeTruthy();
    expect(JSON.stringify(await handle.fetchHistory())).not.toContain(signature);
    expect(worker.output() + bridge.output()).not.toContain(signature);

    // A daemon that missed the ack keeps reporting the finished job: the bridge answers with the ack again.
    const before = acks.length;
    await report({ status: 'COMPLETED', error_msg: null, progress: 100 });
    await eventually('ack re-sent', async () => acks.length > before);
  } finally {
    await robot.publishAsync(topics.presence(robotId), '', { qos: 1, retain: true }); // clear the retained presence
  }
});

test('both processes stop cleanly on SIGTERM', async () => {
  await bridge.kill('SIGTERM');
  await worker.kill('SIGTERM');
  expect(bridge.output()).toContain('mqtt bridge stopped');
  expect(worker.output()).toContain('worker stopped');
  expect(bridge.proc.exitCode).toBe(0);
  expect(worker.proc.exitCode).toBe(0);
});
