// Foundation: every part of the stack is a real server, a workflow survives the SIGKILL of its worker, and the
// security settings of the broker and the SSH client refuse what they must.
import fs from 'node:fs';
import path from 'node:path';
import mqtt from 'mqtt';
import { bundleWorkflowCode, NativeConnection, Worker, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';
import { connectRobot, HostKeyMismatchError } from '../../activities/ssh/connect';
import { uploadPartPath } from '../../activities/ssh/sftp-upload';
import { createS3Client } from '../../activities/s3/client';
import { connectDb, type Db } from '../../common/db';
import { createStackProbeActivities } from '../../workers/probe-activities';
import { robotDirectoryFromFleet } from '../../common/robot-directory';
import type { StackProbeInput, StackProbeResult } from '../../workflows/stack-probe';
import { cfg, eventually, fleet, runTs, sha256File, temporalClient, uniqueId } from '../helpers';

const RobotId = defineSearchAttributeKey('RobotId', SearchAttributeType.KEYWORD);

let bundle: WorkflowBundleWithSourceMap;
let db: Db;
let temporal: Awaited<ReturnType<typeof temporalClient>>;
let nativeConnection: NativeConnection;

beforeAll(async () => {
  bundle = await bundleWorkflowCode({ workflowsPath: require.resolve('../../workflows') });
  nativeConnection = await NativeConnection.connect({ address: cfg.temporal.address });
  db = await connectDb(cfg);
  temporal = await temporalClient();
});

afterAll(async () => {
  await db?.close();
  await temporal?.close();
  await nativeConnection?.close();
});

function probeActivities() {
  return createStackProbeActivities({ cfg, db: db.connection, s3: createS3Client(cfg), robots: robotDirectoryFromFleet(fleet()) });
}

function startProbe(taskQueue: string, input: StackProbeInput) {
  return temporal.client.workflow.start('stackProbe', {
    taskQueue,
    workflowId: `stack-probe-${input.probeId}`,
    args: [input],
    typedSearchAttributes: [{ key: RobotId, value: input.robotId }],
  });
}

test('one workflow reaches MongoDB (FerretDB), S3 (versitygw), Mosquitto and a robot sshd for real', async () => {
  const taskQueue = uniqueId('probe');
  const robot = fleet().robots[0];
  const probeId = uniqueId('p');
  const worker = await Worker.create({
    connection: nativeConnection,
    namespace: cfg.temporal.namespace,
    taskQueue,
    workflowBundle: bundle,
    activities: probeActivities(),
  });
  const handle = await startProbe(taskQueue, { probeId, robotId: robot.id, uploadBytes: 3 * 1024 * 1024 + 17 });
  const result = (await worker.runUntil(handle.result())) as StackProbeResult;

  expect(result.mongo).toEqual({ attempt: 1, documents: 1, robotId: robot.id });
  expect(await db.connection.collection('stack_probes').countDocuments({ _id: probeId as never })).toBe(1);
  expect(result.s3.roundTrip).toBe(true);
  expect(result.mqtt).toEqual({ attempt: 1, robotReceivedQos: 1, cloudReceivedQos: 1 });
  expect(result.ssh.uname).toMatch(/^Linux /);
  expect(result.ssh.remoteSha256).toBe(result.ssh.sha256);
  // The bytes really are on the robot's filesystem root, under the final name, with no .part left.
  const onRobot = path.join(robot.root, 'probes', `${probeId}.bin`);
  expect(fs.statSync(onRobot).size).toBe(3 * 1024 * 1024 + 17);
  expect(sha256File(onRobot)).toBe(result.ssh.sha256);
  expect(fs.existsSync(uploadPartPath(onRobot))).toBe(false);

  // Operators find the run by its search attribute (visibility is eventually consistent).
  const listed = await eventually('workflow list by RobotId', async () => {
    for await (const wf of temporal.client.workflow.list({ query: `RobotId = "${robot.id}" AND WorkflowId = "${handle.workflowId}"` })) {
      return wf;
    }
    return undefined;
  });
  expect(listed.typedSearchAttributes.get(RobotId)).toBe(robot.id);
  expect(listed.status.name).toBe('COMPLETED');
});

test('the workflow survives SIGKILL of its worker in the middle of an activity and resumes the upload', async () => {
  const taskQueue = uniqueId('probe-kill');
  const robot = fleet().robots[1];
  const probeId = uniqueId('k');
  const bytes = 24 * 1024 * 1024;
  const workerEnv = { TEMPORAL_TASK_QUEUE: taskQueue, LOG_LEVEL: 'info' };
  const first = runTs('workers/main.ts', workerEnv);
  try {
    await first.waitForOutput('worker started', 60000);
    const handle = await startProbe(taskQueue, { probeId, robotId: robot.id, uploadBytes: bytes, throttleBytesPerSec: 4 * 1024 * 1024 });
    const part = uploadPartPath(path.join(robot.root, 'probes', `${probeId}.bin`));
    // Kill once the upload is well under way (a few MiB on the robot), not before and not after.
    await eventually('upload in progress', async () => fs.existsSync(part) && fs.statSync(part).size > 6 * 1024 * 1024, 60000);
    await first.kill('SIGKILL');
    const sizeAtKill = fs.statSync(part).size;
    expect(sizeAtKill).toBeLessThan(bytes);

    const second = runTs('workers/main.ts', workerEnv);
    try {
      const result = (await handle.result()) as StackProbeResult;
      // Steps completed before the kill were not run again: their results came from the history.
      expect(result.mongo.attempt).toBe(1);
      expect(result.s3.attempt).toBe(1);
      expect(result.mqtt.attempt).toBe(1);
      // The interrupted step was retried on the new worker and continued where the robot's .part ended.
      expect(result.ssh.attempt).toBeGreaterThanOrEqual(2);
      expect(result.ssh.resumedFrom).toBeGreaterThan(0);
      expect(result.ssh.resumedFrom).toBeLessThanOrEqual(sizeAtKill);
      const onRobot = path.join(robot.root, 'probes', `${probeId}.bin`);
      expect(sha256File(onRobot)).toBe(result.ssh.sha256);
      expect(result.ssh.remoteSha256).toBe(result.ssh.sha256);
      expect(await db.connection.collection('stack_probes').countDocuments({ _id: probeId as never })).toBe(1);
    } finally {
      await second.kill();
    }
  } finally {
    await first.kill('SIGKILL');
  }
});

describe('security settings refuse what they must', () => {
  test('a wrong MQTT password is refused', async () => {
    const robot = fleet().robots[0];
    await expect(
      mqtt.connectAsync(cfg.mqtt.url, { username: robot.mqtt.username, password: 'not-the-password', protocolVersion: 5, reconnectPeriod: 0, connectTimeout: 5000 }),
    ).rejects.toThrow(/Bad User Name or Password|Not authorized/i);
  });

  test('the cloud user cannot log in on the robots\' listener (only on the cloud listener)', async () => {
    await expect(
      mqtt.connectAsync(cfg.mqtt.url, { username: cfg.mqtt.username, password: cfg.mqtt.password, protocolVersion: 5, reconnectPeriod: 0, connectTimeout: 5000 }),
    ).rejects.toThrow(/Bad User Name or Password|Not authorized/i);
    const cloud = await mqtt.connectAsync(cfg.mqtt.cloudUrl, {
      username: cfg.mqtt.username,
      password: cfg.mqtt.password,
      clientId: uniqueId('cloud-test'),
      protocolVersion: 5,
      reconnectPeriod: 0,
    });
    await cloud.endAsync();
  });

  test('a robot cannot publish to another robot\'s topic', async () => {
    const [a, b] = fleet().robots;
    const robots = robotDirectoryFromFleet(fleet());
    const creds = robots.mqttCredentials(a.id);
    const robotA = await mqtt.connectAsync(cfg.mqtt.url, { ...creds, protocolVersion: 5, reconnectPeriod: 0 });
    const cloud = await mqtt.connectAsync(cfg.mqtt.cloudUrl, {
      username: cfg.mqtt.username,
      password: cfg.mqtt.password,
      clientId: uniqueId('cloud-test'),
      protocolVersion: 5,
      reconnectPeriod: 0,
    });
    try {
      const seen: string[] = [];
      cloud.on('message', (t) => seen.push(t));
      await cloud.subscribeAsync('ota/+/state', { qos: 1 });
      // The broker answers PUBACK 0x87 (Not authorized); mqtt.js turns it into a rejected publish.
      await expect(robotA.publishAsync(`ota/${b.id}/state`, '{"x":{"status":"COMPLETED"}}', { qos: 1 })).rejects.toMatchObject({ code: 0x87 });
      // Its own topic works, which shows the subscription above would have seen the forged one.
      const own = await robotA.publishAsync(`ota/${a.id}/state`, '{}', { qos: 1 });
      expect((own as { reasonCode?: number } | undefined)?.reasonCode ?? 0).toBe(0);
      await eventually('own state delivered', async () => seen.includes(`ota/${a.id}/state`));
      expect(seen).not.toContain(`ota/${b.id}/state`);
    } finally {
      await Promise.allSettled([robotA.endAsync(), cloud.endAsync()]);
    }
  });

  test('a robot cannot take another robot\'s client id (it is forced to its user name)', async () => {
    const [a, b] = fleet().robots;
    const robots = robotDirectoryFromFleet(fleet());
    const asB = await mqtt.connectAsync(cfg.mqtt.url, { ...robots.mqttCredentials(b.id), clientId: b.id, protocolVersion: 5, reconnectPeriod: 0 });
    let bKicked = false;
    asB.on('close', () => (bKicked = true));
    const aPosingAsB = await mqtt.connectAsync(cfg.mqtt.url, { ...robots.mqttCredentials(a.id), clientId: b.id, protocolVersion: 5, reconnectPeriod: 0 });
    await new Promise((r) => setTimeout(r, 500));
    expect(bKicked).toBe(false);
    await Promise.allSettled([asB.endAsync(), aPosingAsB.endAsync()]);
  });

  test('the SSH client refuses a robot whose host key is not the pinned one', async () => {
    const robots = robotDirectoryFromFleet(fleet());
    const [a, b] = fleet().robots;
    const good = await connectRobot(robots.ssh(a.id));
    good.end();
    // robot01's address with robot02's pinned key: exactly what a man-in-the-middle looks like.
    await expect(connectRobot({ ...robots.ssh(a.id), hostKeySha256: b.ssh.hostKeySha256 })).rejects.toBeInstanceOf(HostKeyMismatchError);
  });
});
