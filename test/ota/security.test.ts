// What must be refused end to end: one robot touching another's jobs, forged and malformed state messages,
// paths outside a robot's roots (.. and symlink escapes), bytes that do not match the stored sha256, and API
// calls without a valid token.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import mqtt from 'mqtt';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { createS3Client } from '../../activities/s3/client';
import { robotDirectoryFromFleet } from '../../common/robot-directory';
import { cfg, eventually, fleet, sha256File, testRobots } from '../helpers';
import { apiToken, deployFromS3, startOtaSystem, uploadFile, waitForJob, type OtaSystem } from './system';

let sys: OtaSystem;
const [robotA, robotB] = [testRobots()[0], testRobots()[3]];

beforeAll(async () => {
  sys = await startOtaSystem({ daemonsFor: [] });
});
afterAll(async () => {
  await sys?.stop();
});


test('forged and malformed state messages change nothing and do not stop the bridge; each robot gets only its own files', async () => {
  // Robot A is offline; its job waits.
  const bytesA = crypto.randomBytes(50_000);
  const objectA = await uploadFile(sys, 'a.bin', bytesA);
  const rel = `isolation/${Date.now()}.bin`;
  const jobA = await deployFromS3(sys, objectA, robotA.id, path.join(robotA.root, rel));
  expect(await sys.storedStatus(jobA)).toBe('PENDING');

  // Robot B, with its own valid credentials, claims A's job on its own state topic, then sends garbage.
  const creds = robotDirectoryFromFleet(fleet()).mqttCredentials(robotB.id);
  const asB = await mqtt.connectAsync(cfg.mqtt.url, { ...creds, protocolVersion: 5, reconnectPeriod: 0 });
  const topic = `ota/${robotB.id}/state`;
  await asB.publishAsync(topic, JSON.stringify({ [jobA]: { status: 'COMPLETED', error_msg: null } }), { qos: 1 });
  await asB.publishAsync(topic, 'this is not json', { qos: 1 });
  await asB.publishAsync(topic, JSON.stringify([1, 2, 3]), { qos: 1 });
  await asB.publishAsync(topic, JSON.stringify({ [jobA]: { status: 'EXPLODED' } }), { qos: 1 });
  await asB.publishAsync(`ota/${robotB.id}/presence`, Buffer.from([0xff, 0xfe]), { qos: 1 });
  await asB.endAsync();

  // B then deploys normally: its job completes, proving the bridge kept processing after the garbage.
  const bytesB = crypto.randomBytes(60_000);
  const objectB = await uploadFile(sys, 'b.bin', bytesB);
  const jobB = await deployFromS3(sys, objectB, robotB.id, path.join(robotB.root, rel));
  await sys.startDaemon(robotB);
  await eventually('B COMPLETED', async () => (await sys.storedStatus(jobB)) === 'COMPLETED', 15000);
  expect(fs.readFileSync(path.join(robotB.root, rel)).equals(bytesB)).toBe(true);

  // A's job was not moved by B's forgery and B never wrote A's file.
  expect(await sys.storedStatus(jobA)).toBe('PENDING');
  expect(fs.existsSync(path.join(robotA.root, rel))).toBe(false);
  expect(sys.bridge.output()).toMatch(/forged|not.*own|belongs/i);

  // When A comes online it gets its own file, and only that.
  await sys.startDaemon(robotA);
  await eventually('A COMPLETED', async () => (await sys.storedStatus(jobA)) === 'COMPLETED', 15000);
  expect(fs.readFileSync(path.join(robotA.root, rel)).equals(bytesA)).toBe(true);
  expect(fs.readFileSync(path.join(robotB.root, rel)).equals(bytesB)).toBe(true);
});

test('a deploy_path with .. is refused by the API (400 naming the field)', async () => {
  const object = await uploadFile(sys, 'dots.bin', crypto.randomBytes(1000));
  const q = new URLSearchParams({ robot_id: robotA.id, s3_bucket: 'files', s3_object_name: object, deploy_path: `${robotA.root}/../../escape.bin` });
  const res = await sys.call(`/file/deploy_from_s3?${q}`, { method: 'POST' });
  expect(res.status).toBe(400);
  expect(await res.text()).toMatch(/deploy_path/);
});

test('paths outside the robot\'s roots fail on the robot with a clear message and nothing written', async () => {
  const object = await uploadFile(sys, 'escape.bin', crypto.randomBytes(1000));
  const outside = fs.mkdtempSync(path.join(os.tmpdir(), 'ota-outside-'));

  // The cloud refuses it first (its registry records the robot's roots)...
  const q = new URLSearchParams({ robot_id: robotA.id, s3_bucket: 'files', s3_object_name: object, deploy_path: path.join(outside, 'direct.bin') });
  expect((await sys.call(`/file/deploy_from_s3?${q}`, { method: 'POST' })).status).toBe(400);
  // ...and the daemon keeps its own check: with a registry that wrongly allows the path, the robot still refuses.
  await sys.db.models.Robot.updateOne({ _id: robotA.id }, { $push: { deploy_roots: outside } });
  const direct = await deployFromS3(sys, object, robotA.id, path.join(outside, 'direct.bin'));
  const failedDirect = await waitForJob(sys, direct, ['COMPLETED', 'FAILED'], 15000);
  expect(failedDirect.status).toBe('FAILED');
  expect(failedDirect.error_msg).toMatch(/outside the allowed roots/);

  // A symlink inside the root that points outside it.
  const link = path.join(robotA.root, `link-${Date.now()}`);
  fs.symlinkSync(outside, link);
  const viaLink = await deployFromS3(sys, object, robotA.id, path.join(link, 'sub', 'via-link.bin'));
  const failedLink = await waitForJob(sys, viaLink, ['COMPLETED', 'FAILED'], 15000);
  expect(failedLink.status).toBe('FAILED');
  expect(failedLink.error_msg).toMatch(/outside the allowed roots/);

  expect(fs.readdirSync(outside)).toEqual([]);
  await sys.db.models.Robot.updateOne({ _id: robotA.id }, { $pull: { deploy_roots: outside } });
  fs.rmSync(outside, { recursive: true, force: true });
});

test('bytes that do not match the stored sha256 fail the job and leave the old file untouched', async () => {
  const good = crypto.randomBytes(80_000);
  const object = await uploadFile(sys, 'tampered.bin', good);
  // The object is replaced behind the API's back: what the robot downloads no longer matches the record.
  const s3 = createS3Client(cfg);
  await s3.send(new PutObjectCommand({ Bucket: 'files', Key: object, Body: crypto.randomBytes(80_000) }));
  s3.destroy();

  const target = path.join(robotA.root, `tamper-${Date.now()}`, 'file.bin');
  fs.mkdirSync(path.dirname(target), { recursive: true });
  fs.writeFileSync(target, 'the previous version');
  fs.chmodSync(target, 0o750);
  const jobId = await deployFromS3(sys, object, robotA.id, target);
  const failed = await waitForJob(sys, jobId, ['COMPLETED', 'FAILED'], 15000);
  expect(failed.status).toBe('FAILED');
  expect(failed.error_msg).toMatch(/sha256/);
  expect(fs.readFileSync(target, 'utf8')).toBe('the previous version');
  expect(fs.statSync(target).mode & 0o7777).toBe(0o750);
  expect(fs.readdirSync(path.dirname(target)).filter((f) => f !== path.basename(target))).toEqual([]);
});

test('a replaced file keeps its mode', async () => {
  const bytes = crypto.randomBytes(10_000);
  const object = await uploadFile(sys, 'tool.sh', bytes);
  const target = path.join(robotA.root, 'bin', `tool-${Date.now()}.sh`);
  fs.mkdirSync(path.dirname(target), { recursive: true });
  fs.writeFileSync(target, '#!/bin/sh\necho old\n');
  fs.chmodSync(target, 0o755);
  const jobId = await deployFromS3(sys, object, robotA.id, target);
  expect((await waitForJob(sys, jobId, ['COMPLETED', 'FAILED'], 15000)).status).toBe('COMPLETED');
  expect(sha256File(target)).toBe(crypto.createHash('sha256').update(bytes).digest('hex'));
  expect(fs.statSync(target).mode & 0o7777).toBe(0o755);
});

test('the API refuses requests without a valid bearer token (401) but serves /health', async () => {
  const noToken = await fetch(`${sys.baseUrl}/file/list`);
  expect(noToken.status).toBe(401);
  for (const token of [
    await apiToken({ secret: 'another-secret-of-enough-length' }),
    await apiToken({ expiresIn: '-1m' }),
    await apiToken({ alg: 'HS512' }),
    await apiToken({ audience: 'someone-else' }),
    'not.a.jwt',
  ]) {
    const res = await fetch(`${sys.baseUrl}/file/list`, { headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(401);
  }
  const health = await fetch(`${sys.baseUrl}/health`);
  expect(health.status).toBe(200);
  expect(await health.json()).toMatchObject({ status: 'OTA File Service: Running' });
});
