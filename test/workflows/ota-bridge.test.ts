// The MQTT bridge against real Mosquitto, FerretDB and Temporal: robot messages published on the broker become
// signals to real otaDeployment workflows (fake robot-side activities, real job-status writes), and the bad ones
// (forged, malformed, unknown) are dropped without stopping the stream.
import crypto from 'node:crypto';
import pino from 'pino';
import type { MqttClient } from 'mqtt';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { bundleWorkflowCode, Worker } from '@temporalio/worker';
import { createOtaJobActivities } from '../../activities/db/ota-jobs';
import { connectMqtt, createMqttClient, uniqueClientId, waitForConnect } from '../../activities/mqtt/connection';
import type { DispatchOutcome, OtaMqttActivities } from '../../activities/mqtt/ota';
import { connectDb, type Db } from '../../common/db';
import { topics, type JobStatus } from '../../common/protocol';
import { OtaBridge } from '../../workers/bridge/ota-bridge';
import { otaDeployment } from '../../workflows/ota-deployment';
import { jobProgressQuery, otaWorkflowId } from '../../workflows/ota-contract';
import { cfg, eventually, uniqueId } from '../helpers';

const TEST_DB = 'fleet_test_ota_bridge';

let env: TestWorkflowEnvironment;
let db: Db;
let worker: Worker;
let workerRun: Promise<void>;
let publisher: MqttClient; // plays the robots (cloud listener: any topic, so the test can also forge)
let acks: string[] = [];
const taskQueue = uniqueId('ota-bridge');

beforeAll(async () => {
  env = await TestWorkflowEnvironment.createFromExistingServer({ address: cfg.temporal.address, namespace: cfg.temporal.namespace });
  db = await connectDb(cfg, TEST_DB);
  const robotSide: OtaMqttActivities = {
    // Like the real activity: publishes only when the database says the robot is online.
    async dispatchDeploy(jobId): Promise<DispatchOutcome> {
      const job = await db.models.OtaJob.findById(jobId).lean();
      const presence = job && (await db.models.RobotPresence.findById(job.robot_id).lean());
      return presence?.online ? 'dispatched' : 'robot_offline';
    },
    async publishAck() {},
    async publishCancel() {},
  };
  worker = await Worker.create({
    connection: env.nativeConnection,
    namespace: cfg.temporal.namespace,
    taskQueue,
    workflowBundle: await bundleWorkflowCode({ workflowsPath: require.resolve('../../workflows') }),
    activities: { ...robotSide, ...createOtaJobActivities({ models: db.models }) },
  });
  workerRun = worker.run();
  publisher = await connectMqtt(cfg, { clientId: uniqueClientId('test-robots') });
  publisher.on('message', (topic, payload) => {
    if (topic.endsWith('/ack')) acks.push(`${topic} ${payload.toString()}`);
  });
  await publisher.subscribeAsync('ota/+/ack', { qos: 1 });
});

afterAll(async () => {
  worker?.shutdown();
  await workerRun;
  await Promise.allSettled([publisher?.endAsync(), db?.connection.dropDatabase().then(() => db.close())]);
  await env?.teardown();
});

interface LogLine {
  level: number;
  msg: string;
  [k: string]: unknown;
}

/** A bridge on its own MQTT client, with its structured logs captured. */
async function startBridge(clientOpts: { clientId?: string; clean?: boolean; sessionExpirySeconds?: number } = {}) {
  const logs: LogLine[] = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void logs.push(JSON.parse(s) as LogLine) });
  const mqtt = createMqttClient(cfg, { clientId: clientOpts.clientId ?? uniqueClientId('test-bridge'), clean: clientOpts.clean ?? true, sessionExpirySeconds: clientOpts.sessionExpirySeconds, log });
  const bridge = new OtaBridge({ mqtt, models: db.models, workflows: env.client.workflow, log, retryForMs: 2000 });
  await waitForConnect(mqtt);
  await bridge.start();
  return {
    logs,
    stop: async () => {
      bridge.stop();
      await mqtt.endAsync();
    },
  };
}

async function createJob(robotId: string, status: JobStatus = 'PENDING'): Promise<string> {
  const jobId = crypto.randomUUID();
  const now = new Date();
  await db.models.OtaJob.create({
    _id: jobId,
    robot_id: robotId,
    deploy_path: '/opt/x.bin',
    s3_bucket: 'files',
    s3_object_name: 'x.bin',
    sha256: 'a'.repeat(64),
    size: 1,
    status,
    deploy_msg: '{}',
    timestamp: now,
    updated_at: now,
    workflow_id: otaWorkflowId(jobId),
  });
  return jobId;
}

/** A job as the API creates it: the document, then its workflow. */
async function startJob(robotId: string) {
  const jobId = await createJob(robotId);
  const handle = await env.client.workflow.start(otaDeployment, { taskQueue, workflowId: otaWorkflowId(jobId), args: [{ jobId, robotId }] });
  return { jobId, handle };
}

const jobStatus = async (jobId: string) => (await db.models.OtaJob.findById(jobId).lean())?.status;
const publish = (topic: string, payload: string, retain = false) => publisher.publishAsync(topic, payload, { qos: 1, retain });
const state = (robotId: string, map: unknown) => publish(topics.state(robotId), JSON.stringify(map));

test('a forged report (robot B reporting robot A’s job) is dropped; A’s own report still lands', async () => {
  const bridge = await startBridge();
  try {
    const robotA = uniqueId('ra');
    const robotB = uniqueId('rb');
    const { jobId, handle } = await startJob(robotA);
    await state(robotB, { [jobId]: { status: 'COMPLETED', error_msg: null } });
    await state(robotA, { [jobId]: { status: 'RECEIVED', error_msg: null } });

    // Handled in order: once A's RECEIVED is stored, B's forged COMPLETED was already seen and dropped.
    await eventually('RECEIVED stored', async () => (await jobStatus(jobId)) === 'RECEIVED');
    expect((await handle.query(jobProgressQuery)).status).toBe('RECEIVED');
    const forged = bridge.logs.filter((l) => l.msg.startsWith('forged report dropped'));
    expect(forged).toEqual([expect.objectContaining({ robotId: robotB, jobId, owner: robotA })]);
  } finally {
    await bridge.stop();
  }
});

test('malformed payloads are logged and dropped, and the next valid message is processed', async () => {
  const bridge = await startBridge();
  try {
    const robot = uniqueId('rm');
    const { jobId, handle } = await startJob(robot);
    const bad = [
      'not json {',
      '[1,2,3]',
      '"just a string"',
      JSON.stringify({ [jobId]: 'RECEIVED' }),
      JSON.stringify({ [jobId]: { status: 'EXPLODED' } }),
      JSON.stringify({ [jobId]: { status: 'DOWNLOADING', progress: 250 } }),
    ];
    for (const p of bad) await publish(topics.state(robot), p);
    await publish(topics.presence(robot), 'maybe');
    await state(robot, { [crypto.randomUUID()]: { status: 'RECEIVED' } }); // unknown job
    await state(robot, { [jobId]: { status: 'DOWNLOADING', error_msg: null, progress: 40 } });

    await eventually('DOWNLOADING stored', async () => (await jobStatus(jobId)) === 'DOWNLOADING');
    expect(await handle.query(jobProgressQuery)).toMatchObject({ status: 'DOWNLOADING', progress: 40 });
    const dropped = bridge.logs.filter((l) => l.topic === topics.state(robot) && l.msg === 'malformed state message dropped');
    expect(dropped).toHaveLength(bad.length);
    expect(bridge.logs.some((l) => l.msg === 'malformed presence message dropped' && l.robotId === robot)).toBe(true);
    expect(bridge.logs.some((l) => l.msg === 'report for an unknown job dropped' && l.robotId === robot)).toBe(true);
  } finally {
    await bridge.stop();
  }
});

test('a report for a job already terminal in the database re-sends the ack; a job without workflow is skipped', async () => {
  const bridge = await startBridge();
  try {
    const robot = uniqueId('rt');
    const done = await createJob(robot, 'COMPLETED');
    const orphan = await createJob(robot, 'PENDING'); // no workflow: the signal fails, the bridge carries on
    const { jobId, handle } = await startJob(robot);
    await state(robot, { [done]: { status: 'COMPLETED' }, [orphan]: { status: 'RECEIVED' }, [jobId]: { status: 'RECEIVED' } });

    await eventually('ack re-sent', async () => acks.includes(`${topics.ack(robot)} ${done}`));
    await eventually('live job advanced', async () => (await handle.query(jobProgressQuery)).status === 'RECEIVED');
    expect(await jobStatus(done)).toBe('COMPLETED');
    expect(bridge.logs.some((l) => l.msg === 'report for a job without a running workflow dropped' && l.jobId === orphan)).toBe(true);
  } finally {
    await bridge.stop();
  }
});

test('presence: online is stored and re-dispatches the robot’s waiting job; offline is seen by the job', async () => {
  const bridge = await startBridge();
  const robot = uniqueId('rp');
  try {
    const { jobId, handle } = await startJob(robot);
    await eventually('waiting for the robot', async () => {
      const p = await handle.query(jobProgressQuery);
      return p.dispatches === 0 && !p.robotOnline;
    });
    await publish(topics.presence(robot), 'online', true);

    await eventually('dispatched after presence', async () => (await handle.query(jobProgressQuery)).dispatches === 1);
    expect(await db.models.RobotPresence.findById(robot).lean()).toMatchObject({ online: true });
    expect(bridge.logs).toContainEqual(expect.objectContaining({ msg: 'presence stored and signalled', robotId: robot, openJobs: 1, signalled: 1 }));

    await publish(topics.presence(robot), 'offline', true);
    await eventually('offline seen', async () => !(await handle.query(jobProgressQuery)).robotOnline);
    expect(await db.models.RobotPresence.findById(robot).lean()).toMatchObject({ online: false });
    expect(await jobStatus(jobId)).toBe('PENDING');
  } finally {
    await publish(topics.presence(robot), '', true); // clear the retained message
    await bridge.stop();
  }
});

test('persistent session: a report sent while the bridge is down is handled when it comes back', async () => {
  const clientId = uniqueClientId('test-bridge-persistent');
  const session = { clientId, clean: false, sessionExpirySeconds: 120 };
  const first = await startBridge(session);
  await first.stop();

  const robot = uniqueId('rs');
  const { jobId, handle } = await startJob(robot);
  await state(robot, { [jobId]: { status: 'RECEIVED' } }); // nobody is listening now: the broker queues it

  const second = await startBridge(session);
  try {
    await eventually('queued report delivered', async () => (await jobStatus(jobId)) === 'RECEIVED');
    expect((await handle.query(jobProgressQuery)).status).toBe('RECEIVED');
  } finally {
    await second.stop();
    // Drop the session at the broker now rather than after its expiry.
    const cleaner = await connectMqtt(cfg, { clientId, clean: true });
    await cleaner.endAsync();
  }
});
