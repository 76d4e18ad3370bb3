// Robot identity end to end, with the real broker, API, worker, bridge and daemon processes:
// - `npm run robot -- add` makes a robot that receives a job while the other robots stay connected; `remove` cuts
//   it off (its connection is closed and its credential refused).
// - The API refuses a deploy_path outside the robot's recorded roots (400 naming the field) and creates no job.
// - No provisioned robot's config holds an S3 credential.
// - The admin routes /api/v1/robots provision, list and remove.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { robotDirectoryFromFleet } from '../../common/robot-directory';
import { cfg, eventually, fleet, robotEnv, runTs, testRobots, type ChildHandle } from '../helpers';
import { deployFromS3, startOtaSystem, uploadFile, waitForJob, type OtaSystem } from './system';

let sys: OtaSystem;
const [robotA, robotB] = [testRobots()[1], testRobots()[2]];
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'ota-identity-'));
const newId = `prov-${crypto.randomBytes(3).toString('hex')}`;
const extra: ChildHandle[] = [];

beforeAll(async () => {
  sys = await startOtaSystem({ daemonsFor: [robotA] });
});
afterAll(async () => {
  await Promise.allSettled(extra.map((c) => c.kill()));
  await sys?.stop();
  fs.rmSync(work, { recursive: true, force: true });
});

/** `npm run robot -- …` against this system's database; resolves with its output lines. */
async function robotCli(args: string[]): Promise<string[]> {
  const c = runTs('infra/robot-cli.ts', { MONGO_DB: sys.env.MONGO_DB, LOG_LEVEL: 'warn' }, args);
  const code = await new Promise<number | null>((resolve) => c.proc.once('exit', resolve));
  if (code !== 0) throw new Error(`robot ${args.join(' ')} exited ${code}:\n${c.output()}`);
  return c.output().trim().split('\n');
}

const yamlValue = (text: string, key: string) => JSON.parse(new RegExp(`^${key}: (.*)$`, 'm').exec(text)![1]) as string;

function watch(client: MqttClient): { closed: () => boolean } {
  let closed = false;
  client.on('close', () => (closed = true));
  return { closed: () => closed };
}

test('robot add: the new robot receives a job and the others stay connected; robot remove cuts it off', async () => {
  // Another robot, connected as a plain client with its own credential, must not notice the broker reload.
  const other = await mqtt.connectAsync(cfg.mqtt.url, { ...robotDirectoryFromFleet(fleet()).mqttCredentials(robotB.id), protocolVersion: 5, reconnectPeriod: 0 });
  const otherWatch = watch(other);
  const daemonAOutput = () => sys.daemons.get(robotA.id)!.output();
  const lostBefore = (daemonAOutput().match(/broker connection lost/g) ?? []).length;

  const root = path.join(work, 'root');
  fs.mkdirSync(root);
  const configPath = path.join(work, 'ota-daemon.yaml');
  const lines = await robotCli(['add', newId, '--root', root, '--config', configPath, '--state-dir', path.join(work, 'state')]);
  expect(lines[lines.length - 1]).toBe(configPath);
  const configText = fs.readFileSync(configPath, 'utf8');
  expect(fs.statSync(configPath).mode & 0o777).toBe(0o600);
  expect(yamlValue(configText, 'robot_id')).toBe(newId);
  expect(configText).toMatch(/signing_public_keys:\n {2}- "/);

  const listed = await robotCli(['list']);
  expect(listed).toContain(`${newId}\t${root}`);

  const daemon = runTs('daemon/main.ts', { ...robotEnv(), LOG_LEVEL: 'info' }, ['--config', configPath], false);
  extra.push(daemon);
  await daemon.waitForOutput('connected to the broker', 30000);

  const bytes = crypto.randomBytes(30_000);
  const object = await uploadFile(sys, 'new-robot.bin', bytes);
  const target = path.join(root, 'apps', 'new-robot.bin');
  const jobId = await deployFromS3(sys, object, newId, target);
  expect((await waitForJob(sys, jobId, ['COMPLETED', 'FAILED'], 20000)).status).toBe('COMPLETED');
  expect(fs.readFileSync(target).equals(bytes)).toBe(true);

  // Nobody else was disconnected by the reload.
  expect(otherWatch.closed()).toBe(false);
  expect(other.connected).toBe(true);
  expect((daemonAOutput().match(/broker connection lost/g) ?? []).length).toBe(lostBefore);

  const removed = await robotCli(['remove', newId]);
  expect(removed.join('\n')).toMatch(/removed/);
  await daemon.waitForOutput('broker connection lost', 10000);
  // Its credential no longer opens a session.
  const refused = await mqtt
    .connectAsync(cfg.mqtt.url, { username: newId, password: yamlValue(configText, 'mqtt_password'), protocolVersion: 5, reconnectPeriod: 0 })
    .then(async (c) => (await c.endAsync(), 'connected'), (e: Error) => e.message);
  expect(refused).toMatch(/Not authorized|Bad User Name or Password/i);
  expect(await sys.db.models.Robot.findById(newId).lean()).toBeNull();
  expect(other.connected).toBe(true);
  await other.endAsync();
});

test('a deploy_path outside the robot\'s recorded roots gets a 400 naming the field, and no job is created', async () => {
  const object = await uploadFile(sys, 'roots.bin', crypto.randomBytes(1000));
  // Live and archived (finished jobs move to the archive while the test runs): the total never changes by that.
  const jobsOf = async (robotId: string) =>
    (await sys.db.models.OtaJob.countDocuments({ robot_id: robotId })) + (await sys.db.models.OtaJobArchive.countDocuments({ robot_id: robotId }));
  const jobsBefore = await jobsOf(robotA.id);
  const outside = [path.join(robotB.root, 'not-mine.bin'), '/etc/cron.d/evil', `${robotA.root}-sibling/x.bin`];
  for (const deployPath of outside) {
    const q = new URLSearchParams({ robot_id: robotA.id, s3_bucket: 'files', s3_object_name: object, deploy_path: deployPath });
    const res = await sys.call(`/file/deploy_from_s3?${q}`, { method: 'POST' });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { detail: string }).detail).toMatch(/^deploy_path: .*outside robot .*deploy roots/);
  }
  // The multipart deploy refuses it too, before recording anything.
  const form = new FormData();
  form.append('file_info_list', JSON.stringify({ file_list: [{ s3_bucket: 'files', robot_id: robotA.id, deploy_path: outside[0] }] }));
  form.append('files', new Blob([crypto.randomBytes(100)]), 'roots2.bin');
  const res = await sys.call('/file/deploy', { method: 'POST', body: form });
  expect(res.status).toBe(400);
  expect(((await res.json()) as { detail: string }).detail).toMatch(/^file_info_list\.file_list\.0\.deploy_path: .*outside/);
  // A robot that was never provisioned is refused by name.
  const q = new URLSearchParams({ robot_id: 'never-provisioned', s3_bucket: 'files', s3_object_name: object, deploy_path: '/tmp/x' });
  const unknown = await sys.call(`/file/deploy_from_s3?${q}`, { method: 'POST' });
  expect(unknown.status).toBe(400);
  expect(((await unknown.json()) as { detail: string }).detail).toMatch(/^robot_id: .*not provisioned/);
  expect(await jobsOf(robotA.id)).toBe(jobsBefore);
  expect(await jobsOf('never-provisioned')).toBe(0);
});

test('no S3 credential appears in any provisioned robot\'s config', async () => {
  const configs = fleet().robots.map((r) => r.daemonConfig);
  const apiAdded = await sys.call('/robots', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ robot_id: `${newId}-api`, deploy_roots: [path.join(work, 'api-root')] }),
  });
  expect(apiAdded.status).toBe(201);
  const added = (await apiAdded.json()) as { robot_id: string; deploy_roots: string[]; daemon_config: string };
  expect(added.deploy_roots).toEqual([path.join(work, 'api-root')]);
  const texts = [...configs.map((f) => fs.readFileSync(f, 'utf8')), added.daemon_config];
  expect(texts.length).toBeGreaterThan(3);
  for (const text of texts) {
    expect(text).not.toContain(cfg.s3.accessKeyId);
    expect(text).not.toContain(cfg.s3.secretAccessKey);
    expect(text).not.toMatch(/aws_|endpoint_url|S3_/i);
    expect(text).toMatch(/signing_public_keys:/);
  }
  const list = (await (await sys.call('/robots')).json()) as Array<{ robot_id: string }>;
  expect(list.map((r) => r.robot_id)).toEqual(expect.arrayContaining([`${newId}-api`, robotA.id]));
  const del = await sys.call(`/robots/${newId}-api`, { method: 'DELETE' });
  expect(del.status).toBe(200);
  expect((await sys.call(`/robots/${newId}-api`, { method: 'DELETE' })).status).toBe(404);
  const bad = await sys.call('/robots', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ robot_id: 'x', deploy_roots: ['relative'] }) });
  expect(bad.status).toBe(400);
  expect(await bad.text()).toMatch(/roots\[0\]: must be an absolute path/);
  await eventually('api-added robot gone', async () => (await sys.db.models.Robot.findById(`${newId}-api`).lean()) === null);
});
