// The MQTT bridge against real Mosquitto, FerretDB and Temporal: robot messages published on the broker become
// signals to real otaDeployment workflows (fake robot-side activities, real job-status writes), and the bad ones
// (forged, malformed, unknown) are dropped without stopping the stream. State reports travel over several lanes
// (a shared subscription), so they are handled in parallel and possibly out of order: the tests below check
// that this changes neither the outcome nor the delivery guarantee.
import crypto from 'node:crypto';
import pino from 'pino';
import type { IConnackPacket, MqttClient } from 'mqtt';
import type { WorkflowClient, WorkflowHandle } from '@temporalio/client';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { bundleWorkflowCode, Worker } from '@temporalio/worker';
import { createOtaJobActivities, recordStatus } from '../../activities/db/ota-jobs';
import { connectMqtt, createMqttClient, uniqueClientId, waitForConnect } from '../../activities/mqtt/connection';
import type { DispatchOutcome, OtaMqttActivities } from '../../activities/mqtt/ota';
import { connectDb, type Db } from '../../common/db';
import { PRESENCE_ONLINE, topics, type JobReport, type JobStatus } from '../../common/protocol';
import { drainStaleLane, laneClientId, shareGroupFor, sharedStateFilter } from '../../workers/bridge/lanes';
import { OtaBridge } from '../../workers/bridge/ota-bridge';
import { otaDeployment } from '../../workflows/ota-deployment';
import { jobProgressQuery, otaWorkflowId } from '../../workflows/ota-contract';
import { JOB_STATE_SA } from '../../workflows/search-attributes';
import { isForwardTransition, isTerminalStatus } from '../../workflows/ota-status';
import { cfg, eventually, uniqueId, bridgeSessionIds, endMqttSessions } from '../helpers';

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
    // Stores like the real activity; the robot side of it (cancel, ack) is not under test here.
    finishJob: (jobId, _robotId, status, error_msg, passedThrough) => recordStatus(db.models, jobId, status, error_msg, passedThrough),
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

interface BridgeOptions {
  /** Main connection id; lanes are `<clientId>-<i>`. Unique per test unless a test resumes sessions. */
  clientId?: string;
  /** Persistent sessions (clean:false, 120 s expiry) for the main connection and every lane. */
  persistent?: boolean;
  lanes?: number;
  /** Defaults to the test environment's client; tests wrap it to hold or count signals. */
  workflows?: Pick<WorkflowClient, 'getHandle'>;
  /** Defaults to the test database's models; tests wrap them to count reads. */
  models?: Db['models'];
}

/** A bridge as workers/mqtt-bridge.ts wires it (main connection + state lanes), with its structured logs captured. */
async function startBridge(o: BridgeOptions = {}) {
  const logs: LogLine[] = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void logs.push(JSON.parse(s) as LogLine) });
  const clientId = o.clientId ?? uniqueClientId('test-bridge');
  const session = o.persistent ? { clean: false, sessionExpirySeconds: 120 } : { clean: true };
  const connect = (id: string) => createMqttClient(cfg, { clientId: id, ...session, log });
  const mqtt = connect(clientId);
  const lanes = Array.from({ length: o.lanes ?? 3 }, (_, i) => connect(laneClientId(clientId, i)));
  const bridge = new OtaBridge({
    mqtt,
    stateLanes: lanes,
    shareGroup: shareGroupFor(clientId),
    models: o.models ?? db.models,
    workflows: o.workflows ?? env.client.workflow,
    log,
    retryForMs: 2000,
  });
  const clients = [mqtt, ...lanes];
  await Promise.all(clients.map((c) => waitForConnect(c)));
  await bridge.start();
  return {
    logs,
    bridge,
    mqtt,
    /** Like a SIGKILL: connections dropped, nothing acknowledged that was not handled yet. */
    crash: () => clients.forEach((c) => c.end(true)),
    stop: async () => {
      bridge.stop();
      await Promise.all(clients.map((c) => c.endAsync()));
    },
  };
}

/** Ends the persistent sessions a test left at the broker (now rather than after their expiry). */
const sessionIds = bridgeSessionIds;
const dropSessions = endMqttSessions;

/**
 * The test environment's workflow client with a hook after each robotReport signal was accepted by the server
 * (the hook delays the bridge's view of the call, not the delivery), and a count of those signals.
 */
function hookedWorkflows(after: (jobId: string, report: JobReport) => Promise<void>) {
  const signalled: { jobId: string; report: JobReport }[] = [];
  const workflows: Pick<WorkflowClient, 'getHandle'> = {
    getHandle: (workflowId: string) => {
      const real = env.client.workflow.getHandle(workflowId);
      const jobId = workflowId.replace(/^ota-job-/, '');
      const handle: WorkflowHandle = {
        ...real,
        signal: async (def, ...args) => {
          await real.signal(def, ...args);
          const report = args[0] as JobReport;
          signalled.push({ jobId, report });
          await after(jobId, report);
        },
      };
      return handle;
    },
  };
  return { workflows, signalled };
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

/**
 * Where the job stands, as job_state shows it: a running job stores nothing until it is decided, so RECEIVED /
 * DOWNLOADING come from its workflow (what the bridge delivered); a terminal status only once it is stored.
 */
const jobStatus = async (jobId: string): Promise<JobStatus | undefined> => {
  const stored = (await db.models.OtaJob.findById(jobId).lean())?.status as JobStatus | undefined;
  if (!stored || isTerminalStatus(stored)) return stored;
  const live = await env.client.workflow.getHandle(otaWorkflowId(jobId)).query(jobProgressQuery).catch(() => null);
  return live && !isTerminalStatus(live.status) && isForwardTransition(stored, live.status) ? live.status : stored;
};
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

    // Lanes handle the two messages in either order: wait for both, then nothing may have come from B.
    await eventually('RECEIVED stored', async () => (await jobStatus(jobId)) === 'RECEIVED');
    await eventually('forged report seen', async () => bridge.logs.some((l) => l.msg.startsWith('forged report dropped')));
    expect(await jobStatus(jobId)).toBe('RECEIVED');
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
    await db.models.RobotPresence.create({ _id: robot, online: true, changed_at: new Date() });
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
    const dropped = () => bridge.logs.filter((l) => l.topic === topics.state(robot) && l.msg === 'malformed state message dropped');
    await eventually('every malformed message seen', async () => dropped().length >= bad.length);
    expect(dropped()).toHaveLength(bad.length);
    await eventually('malformed presence seen', async () => bridge.logs.some((l) => l.msg === 'malformed presence message dropped' && l.robotId === robot));
    await eventually('unknown job seen', async () => bridge.logs.some((l) => l.msg === 'report for an unknown job dropped' && l.robotId === robot));
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

test('COMPLETED reported for a job the cloud had canceled: status stays, the installed file is recorded, ack re-sent', async () => {
  const bridge = await startBridge();
  try {
    const robot = uniqueId('rc');
    const canceled = await createJob(robot, 'CANCELED');
    await state(robot, { [canceled]: { status: 'COMPLETED' } });

    await eventually('ack re-sent', async () => acks.includes(`${topics.ack(robot)} ${canceled}`));
    const job = (await db.models.OtaJob.findById(canceled).lean())!;
    expect(job.status).toBe('CANCELED');
    expect(job.error_msg).toMatch(/already installed/);
    const target = await db.models.DeployTarget.findOne({ job_id: canceled }).lean();
    expect(target).toMatchObject({ robot_id: robot, deploy_path: job.deploy_path, s3_object_name: job.s3_object_name });
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

test('presence is not serialized across robots: a robot whose signals hang does not hold up another robot', async () => {
  const slow = uniqueId('ps');
  const fast = uniqueId('pf');
  const { jobId: slowJob } = await startJob(slow);
  const { handle: fastHandle } = await startJob(fast);
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  // Every signal to the slow robot's job hangs (a Temporal call that does not come back) until released.
  const workflows: Pick<WorkflowClient, 'getHandle'> = {
    getHandle: (workflowId: string) => {
      const real = env.client.workflow.getHandle(workflowId);
      if (workflowId !== otaWorkflowId(slowJob)) return real;
      return { ...real, signal: async (...args: Parameters<WorkflowHandle['signal']>) => { await held; await real.signal(...args); } } as WorkflowHandle;
    },
  };
  const bridge = await startBridge({ workflows });
  try {
    await publish(topics.presence(slow), 'online', true);
    await eventually('slow robot in hand', async () => (await db.models.RobotPresence.findById(slow).lean())?.online === true);
    await publish(topics.presence(fast), 'online', true);
    await eventually('fast robot dispatched while the slow one hangs', async () => (await fastHandle.query(jobProgressQuery)).dispatches === 1, 10000);
    expect(bridge.logs).not.toContainEqual(expect.objectContaining({ msg: 'presence stored and signalled', robotId: slow }));
  } finally {
    release();
    await publish(topics.presence(slow), '', true);
    await publish(topics.presence(fast), '', true);
    await bridge.stop();
  }
});

test('presence is retained, so it reaches a bridge that subscribes after it was published (lanes would miss it)', async () => {
  const robot = uniqueId('rr');
  const { handle } = await startJob(robot);
  await eventually('waiting for the robot', async () => (await handle.query(jobProgressQuery)).robotOnline === false);
  await publish(topics.presence(robot), 'online', true); // nobody listening yet: only the retained copy remains
  const bridge = await startBridge();
  try {
    await eventually('dispatched after retained presence', async () => (await handle.query(jobProgressQuery)).dispatches === 1);
    expect(bridge.logs).toContainEqual(expect.objectContaining({ msg: 'presence stored and signalled', robotId: robot, signalled: 1 }));
  } finally {
    await publish(topics.presence(robot), '', true);
    await bridge.stop();
  }
});

test('persistent sessions: a report sent while the bridge is down is handled when it comes back, once', async () => {
  const clientId = uniqueClientId('test-bridge-persistent');
  const lanes = 2;
  // The main session as a bridge without lanes left it: subscribed to every state directly.
  const legacy = await connectMqtt(cfg, { clientId, clean: false, sessionExpirySeconds: 120 });
  await legacy.subscribeAsync(topics.allStates, { qos: 1 });
  await legacy.endAsync();
  const first = await startBridge({ clientId, persistent: true, lanes });
  await first.stop();

  const robot = uniqueId('rs');
  const { jobId, handle } = await startJob(robot);
  await state(robot, { [jobId]: { status: 'RECEIVED' } }); // nobody is listening now: the broker queues it

  const hook = hookedWorkflows(async () => {});
  const second = await startBridge({ clientId, persistent: true, lanes, workflows: hook.workflows });
  const onMain: string[] = [];
  second.mqtt.on('message', (topic) => onMain.push(topic));
  try {
    await eventually('queued report delivered', async () => (await jobStatus(jobId)) === 'RECEIVED');
    expect((await handle.query(jobProgressQuery)).status).toBe('RECEIVED');
    await state(robot, { [jobId]: { status: 'DOWNLOADING', progress: 5 } });
    await eventually('live report delivered', async () => (await jobStatus(jobId)) === 'DOWNLOADING');
    // Reports come through the lanes only: the main connection no longer carries the legacy subscription.
    expect(onMain.filter((t) => t.endsWith('/state'))).toEqual([]);
    expect(hook.signalled.map((x) => x.report.status)).toEqual(['RECEIVED', 'DOWNLOADING']);
  } finally {
    await second.stop();
    await dropSessions(sessionIds(clientId, lanes));
  }
});

test('a lane whose session comes back without its shared subscription (Mosquitto restart) subscribes again', async () => {
  const clientId = uniqueClientId('test-bridge-resub');
  const bridge = await startBridge({ clientId, persistent: true, lanes: 1 });
  try {
    // What a Mosquitto 2.0.11 restart does to a lane: the session survives, its shared subscription does not.
    // Reproduced by taking the lane's session over, dropping the subscription and leaving the session behind;
    // twice, since every reconnect must subscribe again, not only the first.
    const lane = laneClientId(clientId, 0);
    const robot = uniqueId('rq');
    for (const round of [1, 2]) {
      const impostor = await connectMqtt(cfg, { clientId: lane, clean: false, sessionExpirySeconds: 120 });
      await impostor.unsubscribeAsync(sharedStateFilter(shareGroupFor(clientId)));
      await impostor.endAsync();
      const connects = () => bridge.logs.filter((l) => l.msg === 'mqtt connected' && l.clientId === lane);
      await eventually(`lane reconnected (${round})`, async () => connects().length > round);
      expect(connects().at(-1)).toMatchObject({ sessionPresent: true });

      const { jobId } = await startJob(robot);
      // The resubscribe may still be on its way: publish until one report lands (a group without members drops it).
      await eventually(`report handled after reconnect ${round}`, async () => {
        await state(robot, { [jobId]: { status: 'RECEIVED' } });
        return (await jobStatus(jobId)) === 'RECEIVED';
      });
    }
  } finally {
    await bridge.stop();
    await dropSessions(sessionIds(clientId, 1));
  }
});

test('reports of different jobs are handled in parallel across the lanes', async () => {
  let inHand = 0;
  let mostInHand = 0;
  const hook = hookedWorkflows(async () => {
    inHand++;
    mostInHand = Math.max(mostInHand, inHand);
    await new Promise((r) => setTimeout(r, 400)); // a slow Temporal: each report takes 400 ms
    inHand--;
  });
  const bridge = await startBridge({ lanes: 3, workflows: hook.workflows });
  try {
    const robot = uniqueId('rl');
    const jobs = await Promise.all(Array.from({ length: 6 }, () => startJob(robot)));
    await Promise.all(jobs.map(({ jobId }) => state(robot, { [jobId]: { status: 'RECEIVED' } })));
    for (const { jobId } of jobs) await eventually(`job ${jobId} RECEIVED`, async () => (await jobStatus(jobId)) === 'RECEIVED');
    await eventually('every report handled', async () => hook.signalled.length === 6 && inHand === 0);
    // One connection hands over one report at a time (mostInHand would be 1); the lanes overlap them.
    expect(mostInHand).toBeGreaterThanOrEqual(2);
  } finally {
    await bridge.stop();
  }
});

test('a bridge that dies while handling a report gets it again from the lane’s session', async () => {
  const clientId = uniqueClientId('test-bridge-crash');
  const lanes = 2;
  let stuck!: () => void;
  const never = new Promise<void>((r) => (stuck = r));
  let reached = false;
  // The signal reaches the workflow, but the bridge "dies" before it finishes handling: no PUBACK was sent.
  const hook = hookedWorkflows(async () => {
    reached = true;
    await never;
  });
  const first = await startBridge({ clientId, persistent: true, lanes, workflows: hook.workflows });
  const robot = uniqueId('rc');
  const { jobId } = await startJob(robot);
  try {
    await state(robot, { [jobId]: { status: 'RECEIVED' } });
    await eventually('report in hand', async () => reached);
    first.crash();

    const recount = hookedWorkflows(async () => {});
    const second = await startBridge({ clientId, persistent: true, lanes, workflows: recount.workflows });
    try {
      await eventually('report redelivered to the restarted bridge', async () => recount.signalled.some((x) => x.jobId === jobId));
      await eventually('RECEIVED stored', async () => (await jobStatus(jobId)) === 'RECEIVED');
    } finally {
      await second.stop();
    }
  } finally {
    stuck();
    await dropSessions(sessionIds(clientId, lanes));
  }
});

test('out-of-order delivery (lanes race) still ends with the right status, never a rollback', async () => {
  const bridge = await startBridge();
  try {
    const robot = uniqueId('ro');
    const { jobId, handle } = await startJob(robot);
    const report = (status: JobStatus, progress?: number) => bridge.bridge.handle(topics.state(robot), JSON.stringify({ [jobId]: { status, error_msg: null, progress } }));

    await report('DOWNLOADING', 50);
    await eventually('DOWNLOADING stored', async () => (await jobStatus(jobId)) === 'DOWNLOADING');
    await report('RECEIVED'); // overtaken by DOWNLOADING on another lane
    await report('PENDING');
    await eventually('late reports processed', async () => (await handle.query(jobProgressQuery)).progress === 50);
    expect(await jobStatus(jobId)).toBe('DOWNLOADING');
    expect((await handle.query(jobProgressQuery)).status).toBe('DOWNLOADING');

    await report('COMPLETED');
    await report('DOWNLOADING', 60); // a report that lost its race to COMPLETED
    await report('RECEIVED');
    expect(await handle.result()).toMatchObject({ status: 'COMPLETED', error_msg: null });
    expect(await jobStatus(jobId)).toBe('COMPLETED');
    expect((await handle.describe()).typedSearchAttributes.get(JOB_STATE_SA)).toBe('COMPLETED');

    // Even later: the job is closed and terminal, so the bridge re-acks instead of reopening anything.
    await report('DOWNLOADING', 70);
    await eventually('ack re-sent', async () => acks.includes(`${topics.ack(robot)} ${jobId}`));
    expect(await jobStatus(jobId)).toBe('COMPLETED');
  } finally {
    await bridge.stop();
  }
});

test('heartbeat dedupe stays right when two lanes signal one job at once', async () => {
  let releaseSeventy!: () => void;
  const seventyHeld = new Promise<void>((r) => (releaseSeventy = r));
  let seventyDelivered = false;
  // Progress 70 reaches the workflow first but its call returns last; 40 reaches it second and returns at once.
  // So the workflow's last report is 40 although the bridge saw 70 finish last.
  const hook = hookedWorkflows(async (_jobId, report) => {
    if (report.progress === 70 && !seventyDelivered) {
      seventyDelivered = true;
      await seventyHeld;
    }
  });
  const bridge = await startBridge({ workflows: hook.workflows });
  try {
    const robot = uniqueId('rd');
    const { jobId, handle } = await startJob(robot);
    const report = (progress: number) =>
      bridge.bridge.handle(topics.state(robot), JSON.stringify({ [jobId]: { status: 'DOWNLOADING', error_msg: null, progress } }));

    const seventy = report(70);
    await eventually('70 delivered', async () => seventyDelivered);
    await report(40);
    await eventually('workflow shows 40', async () => (await handle.query(jobProgressQuery)).progress === 40);
    releaseSeventy();
    await seventy;

    // The robot's next heartbeat carries 70: it must reach the workflow (it was not the workflow's last report).
    await report(70);
    await eventually('workflow converges to 70', async () => (await handle.query(jobProgressQuery)).progress === 70);
    // Without overlap the dedupe works as before: an identical heartbeat is not signalled again.
    const before = hook.signalled.length;
    await report(70);
    expect(hook.signalled.length).toBe(before);
  } finally {
    releaseSeventy();
    await bridge.stop();
  }
});

test('a lane left over from a larger MQTT_BRIDGE_LANES is drained: its queued share of reports is handled', async () => {
  const clientId = uniqueClientId('test-bridge-shrunk');
  const group = shareGroupFor(clientId);
  const staleId = laneClientId(clientId, 2);
  // Lane 2 of an earlier run with 3 lanes: still a member of the group while its session lives.
  const stale = await connectMqtt(cfg, { clientId: staleId, clean: false, sessionExpirySeconds: 120 });
  await stale.subscribeAsync(sharedStateFilter(group), { qos: 1 });
  await stale.endAsync();

  const bridge = await startBridge({ clientId, lanes: 2 });
  try {
    const robot = uniqueId('rx');
    const jobs = await Promise.all(Array.from({ length: 6 }, () => startJob(robot)));
    for (const { jobId } of jobs) await state(robot, { [jobId]: { status: 'RECEIVED' } });
    const received = async () => (await Promise.all(jobs.map(({ jobId }) => jobStatus(jobId)))).filter((s) => s === 'RECEIVED').length;
    // The broker round-robins over the three members, the offline one included: its share waits in its queue.
    // (Other tests' robots may publish on the broker too, so the exact split is not asserted.)
    await eventually('live lanes done', async () => (await received()) >= 3);
    await new Promise((r) => setTimeout(r, 1000));
    expect(await received()).toBeLessThan(6);

    const client = createMqttClient(cfg, { clientId: staleId, clean: false, sessionExpirySeconds: 120 });
    const outcome = await drainStaleLane({ client, group, handle: (t, p) => bridge.bridge.handle(t, p), log: pino({ level: 'silent' }), idleMs: 300 });
    expect(outcome).toBe('drained');
    expect(await received()).toBe(6);

    // The session is gone and the group has only the live lanes: every new report is handled at once.
    const probe = createMqttClient(cfg, { clientId: staleId, clean: false, sessionExpirySeconds: 0 });
    const connack = await new Promise<IConnackPacket>((resolve) => probe.once('connect', resolve));
    await probe.endAsync();
    expect(connack.sessionPresent).toBe(false);
    const more = await Promise.all(Array.from({ length: 3 }, () => startJob(robot)));
    for (const { jobId } of more) await state(robot, { [jobId]: { status: 'RECEIVED' } });
    for (const { jobId } of more) await eventually(`job ${jobId} RECEIVED`, async () => (await jobStatus(jobId)) === 'RECEIVED');

    // No session to retire: nothing to do, and none is left behind.
    const fresh = createMqttClient(cfg, { clientId: laneClientId(clientId, 3), clean: false, sessionExpirySeconds: 120 });
    expect(await drainStaleLane({ client: fresh, group, handle: async () => {}, log: pino({ level: 'silent' }) })).toBe('no-session');
  } finally {
    await bridge.stop();
  }
});

test('a job seen open costs one database read: its later reports are checked from memory; a repeat after it closed is read and re-acked', async () => {
  let reads = 0;
  const OtaJob = new Proxy(db.models.OtaJob, {
    get(target, prop, receiver) {
      if (prop === 'find' || prop === 'findById' || prop === 'findOne') {
        return (...args: unknown[]) => {
          reads++;
          return (Reflect.get(target, prop, receiver) as (...a: unknown[]) => unknown).apply(target, args);
        };
      }
      return Reflect.get(target, prop, receiver) as unknown;
    },
  });
  const bridge = await startBridge({ models: { ...db.models, OtaJob } });
  try {
    const robot = uniqueId('rm');
    await db.models.RobotPresence.create({ _id: robot, online: true, changed_at: new Date() });
    const { jobId, handle } = await startJob(robot);
    await eventually('dispatched', async () => (await handle.query(jobProgressQuery)).dispatches === 1);
    const report = (r: JobReport) => bridge.bridge.handle(topics.state(robot), JSON.stringify({ [jobId]: r }));
    // The robot announced itself (a robot without presence costs a check of its open jobs now and then).
    await bridge.bridge.handle(topics.presence(robot), PRESENCE_ONLINE);
    reads = 0;
    await report({ status: 'RECEIVED' });
    expect(reads).toBe(1);
    await report({ status: 'DOWNLOADING', progress: 10 });
    await report({ status: 'DOWNLOADING', progress: 10 }); // a heartbeat: not signalled again either
    await report({ status: 'DOWNLOADING', progress: 60 });
    await eventually('progress delivered', async () => (await handle.query(jobProgressQuery)).progress === 60);
    await report({ status: 'COMPLETED' });
    expect(await handle.result()).toMatchObject({ status: 'COMPLETED' });
    expect(reads).toBe(1);
    // Another robot claiming the job is still refused (from memory; that robot's own presence check aside).
    await bridge.bridge.handle(topics.state(uniqueId('rm-other')), JSON.stringify({ [jobId]: { status: 'FAILED', error_msg: 'forged' } }));
    expect(bridge.logs.some((l) => l.msg === 'forged report dropped: the job belongs to another robot' && l.jobId === jobId)).toBe(true);
    expect(await jobStatus(jobId)).toBe('COMPLETED');
    // The daemon missed its ack and reports COMPLETED again: read from the database, ack re-sent.
    acks = [];
    reads = 0;
    await report({ status: 'COMPLETED' });
    await eventually('ack re-sent', async () => acks.includes(`${topics.ack(robot)} ${jobId}`));
    expect(reads).toBe(1);
  } finally {
    await bridge.stop();
  }
});
