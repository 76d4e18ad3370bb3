// Robots that are offline when a job is created: the job waits (PENDING) and completes by itself when the
// robot's daemon comes online; a pending job that is canceled is never written by the daemon.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { eventually, testRobots } from '../helpers';
import { deployFromS3, startOtaSystem, uploadFile, type OtaSystem } from './system';

let sys: OtaSystem;
const robot = testRobots()[1];

beforeAll(async () => {
  sys = await startOtaSystem({ daemonsFor: [] });
});
afterAll(async () => {
  await sys?.stop();
});

// Statuses are read from the database (sys.storedStatus), not the API: after the deploy call no further API
// request is made.
test('a job for an offline robot stays PENDING and completes when the daemon starts, with no further API call', async () => {
  const bytes = crypto.randomBytes(300_000);
  const object = await uploadFile(sys, 'offline.bin', bytes);
  const target = path.join(robot.root, 'offline', `${Date.now()}.bin`);
  const jobId = await deployFromS3(sys, object, robot.id, target);

  await new Promise((r) => setTimeout(r, 3000));
  expect(await sys.storedStatus(jobId)).toBe('PENDING');
  expect(fs.existsSync(target)).toBe(false);

  const daemon = await sys.startDaemon(robot);
  await eventually('job COMPLETED', async () => (await sys.storedStatus(jobId)) === 'COMPLETED', 15000);
  expect(fs.readFileSync(target).equals(bytes)).toBe(true);
  await daemon.kill();
});

test('canceling a pending job ends it CANCELED and the daemon never writes the file', async () => {
  expect(sys.daemons.get(robot.id)?.proc.exitCode).not.toBeNull(); // the robot is offline again
  const object = await uploadFile(sys, 'canceled.bin', crypto.randomBytes(100_000));
  const target = path.join(robot.root, 'canceled', `${Date.now()}.bin`);
  const jobId = await deployFromS3(sys, object, robot.id, target);
  expect(await sys.storedStatus(jobId)).toBe('PENDING');

  const res = await sys.call(`/job/${jobId}/cancel`, { method: 'POST' });
  expect(res.status).toBe(202); // accepted: the job's workflow carries the cancel out
  await eventually('job CANCELED', async () => (await sys.storedStatus(jobId)) === 'CANCELED', 10000);
  const again = await sys.call(`/job/${jobId}/cancel`, { method: 'POST' });
  expect(again.status).toBe(409);

  // A later job for the same robot shows the daemon is up and processing; the canceled one stays unwritten.
  const daemon = await sys.startDaemon(robot);
  const laterTarget = path.join(robot.root, 'canceled', `later-${Date.now()}.bin`);
  const laterJob = await deployFromS3(sys, object, robot.id, laterTarget);
  await eventually('later job COMPLETED', async () => (await sys.storedStatus(laterJob)) === 'COMPLETED', 15000);
  expect(fs.existsSync(target)).toBe(false);
  expect(fs.existsSync(`${target}.part`)).toBe(false);
  expect(await sys.storedStatus(jobId)).toBe('CANCELED');
  await daemon.kill();
});
