// The OTA daemon as a real child process against the real stack: Mosquitto (robot listener, per-robot
// credentials and ACL) and versitygw behind real presigned URLs. The test plays the cloud on the cloud
// listener: it publishes deploy/ack/cancel and reads the robot's state and presence topics.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DeleteObjectCommand, GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import mqtt, { type MqttClient } from 'mqtt';
import YAML from 'yaml';
import { createS3Client } from '../../activities/s3/client';
import { stateMessageSchema, topics, type DeployMessage, type JobReport, type StateMessage } from '../../common/protocol';
import type { RobotManifest } from '../../infra/fleet';
import { restartServer } from '../../infra/stack';
import { cfg, eventually, fleet, runTs, uniqueId, type ChildHandle } from '../helpers';

const MiB = 1 << 20;
const bucket = cfg.s3.buckets[0];

let s3: S3Client;
let cloud: MqttClient;
let robot: RobotManifest;
let workDir: string; // inside the robot's root: where this file's deploys land
let stateDir: string;
let configFile: string;
let daemon: ChildHandle | null = null;
const objectKeys: string[] = [];

/** Every state map the robot published, in order, and its presence messages. */
const states: StateMessage[] = [];
const presence: string[] = [];

const sha256 = (b: Buffer) => crypto.createHash('sha256').update(b).digest('hex');

/** True when a local process runs a daemon with this robot's provisioned config (`npm start` does). */
function daemonProcessRunning(r: RobotManifest): boolean {
  for (const pid of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      if (fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(r.daemonConfig)) return true;
    } catch {
      // process gone
    }
  }
  return false;
}

/**
 * A robot no other daemon serves right now: two clients with one robot id would keep taking the session from
 * each other. Prefers robots whose retained presence is not "online"; a stale "online" with no daemon process
 * on this machine is usable too.
 */
async function freeRobot(): Promise<RobotManifest> {
  const retained = new Map<string, string>();
  const probe = await mqtt.connectAsync(cfg.mqtt.cloudUrl, {
    protocolVersion: 5,
    clientId: uniqueId('daemon-it-probe'),
    username: cfg.mqtt.username,
    password: cfg.mqtt.password,
  });
  probe.on('message', (topic, payload) => retained.set(topic, payload.toString()));
  await probe.subscribeAsync(topics.allPresence, { qos: 1 });
  await new Promise((r) => setTimeout(r, 500));
  await probe.endAsync();
  const robots = [...fleet().robots].reverse();
  const idle = robots.filter((r) => !daemonProcessRunning(r));
  const free = idle.find((r) => retained.get(topics.presence(r.id)) !== 'online') ?? idle[0];
  if (!free) throw new Error(`every simulated robot has a running daemon (${robots.map((r) => r.id).join(', ')}); stop one to run these tests`);
  return free;
}

function writeConfig(extra: Record<string, unknown> = {}): void {
  // Start from the config the stack provisioned for this robot (its real credentials and root), with a private
  // state dir and a short heartbeat for the test. Without signing keys: drop-in mode, where the daemon accepts
  // the unsigned messages this test publishes as a reference cloud would (test/ota/signing.test.ts covers keys).
  const provisioned = YAML.parse(fs.readFileSync(robot.daemonConfig, 'utf8')) as Record<string, unknown>;
  fs.writeFileSync(
    configFile,
    YAML.stringify({ ...provisioned, signing_public_keys: [], state_dir: stateDir, report_interval_s: 1, ...extra }),
    { mode: 0o600 },
  );
}

async function startDaemon(): Promise<ChildHandle> {
  const before = presence.length;
  const child = runTs('daemon/main.ts', { LOG_LEVEL: 'info' }, ['--config', configFile]);
  daemon = child;
  await child.waitForOutput('connected to the broker', 30000);
  await eventually('presence online', async () => presence.slice(before).includes('online'));
  return child;
}

async function upload(key: string, body: Buffer): Promise<string> {
  await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }));
  objectKeys.push(key);
  return getSignedUrl(s3, new GetObjectCommand({ Bucket: bucket, Key: key }), { expiresIn: 900 });
}

async function deployMessage(name: string, body: Buffer, extra: Partial<DeployMessage> = {}): Promise<DeployMessage> {
  const key = `daemon-it/${uniqueId(name)}`;
  return {
    job_id: uniqueId('job'),
    s3_bucket: bucket,
    s3_object_name: key,
    deploy_path: path.join(workDir, name),
    url: await upload(key, body),
    sha256: sha256(body),
    size: body.length,
    ...extra,
  };
}

async function publish(topic: string, payload: string): Promise<void> {
  await cloud.publishAsync(topic, payload, { qos: 1 });
}

const reportsOf = (jobId: string): JobReport[] => states.flatMap((s) => (s[jobId] ? [s[jobId]] : []));

async function waitForStatus(jobId: string, status: JobReport['status'], timeoutMs = 30000): Promise<JobReport> {
  return eventually(`${jobId} ${status}`, async () => reportsOf(jobId).find((r) => r.status === status), timeoutMs);
}

/** Parsed JSON log lines of a daemon run. */
const logLines = (child: ChildHandle): Record<string, unknown>[] =>
  child
    .output()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);

beforeAll(async () => {
  s3 = createS3Client(cfg);
  robot = await freeRobot();
  workDir = path.join(robot.root, uniqueId('daemon-it'));
  stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ota-daemon-it-state-'));
  configFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ota-daemon-it-cfg-')), 'ota.yaml');
  writeConfig();

  cloud = await mqtt.connectAsync(cfg.mqtt.cloudUrl, {
    protocolVersion: 5,
    clientId: uniqueId('daemon-it-cloud'),
    username: cfg.mqtt.username,
    password: cfg.mqtt.password,
  });
  cloud.on('message', (topic, payload) => {
    if (topic === topics.presence(robot.id)) presence.push(payload.toString());
    if (topic === topics.state(robot.id)) states.push(stateMessageSchema.parse(JSON.parse(payload.toString())));
  });
  await cloud.subscribeAsync({ [topics.state(robot.id)]: { qos: 1 }, [topics.presence(robot.id)]: { qos: 1 } });
  await startDaemon();
});

afterAll(async () => {
  await daemon?.kill('SIGTERM');
  await cloud?.endAsync();
  for (const Key of objectKeys) await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key })).catch(() => undefined);
  s3?.destroy();
  if (workDir) fs.rmSync(workDir, { recursive: true, force: true });
  if (stateDir) fs.rmSync(stateDir, { recursive: true, force: true });
  if (configFile) fs.rmSync(path.dirname(configFile), { recursive: true, force: true });
});

describe('OTA daemon (real process, real Mosquitto, real S3)', () => {
  test('a deploy installs the exact bytes and reports RECEIVED then COMPLETED; an ack stops the reports', async () => {
    const body = crypto.randomBytes(3 * MiB + 17);
    const m = await deployMessage('bin/app.bin', body);
    await publish(topics.deploy(robot.id), JSON.stringify(m));
    const done = await waitForStatus(m.job_id, 'COMPLETED');
    expect(done).toEqual({ status: 'COMPLETED', error_msg: null, progress: 100 });
    expect(reportsOf(m.job_id)[0].status).toBe('RECEIVED');
    expect(fs.readFileSync(m.deploy_path).equals(body)).toBe(true);
    expect(fs.statSync(m.deploy_path).mode & 0o777).toBe(0o644);
    expect(fs.readdirSync(path.dirname(m.deploy_path))).toEqual(['app.bin']);

    const afterAck = states.length;
    await publish(topics.ack(robot.id), m.job_id);
    // Heartbeats (report_interval_s: 1) keep coming; once one lacks the acked job, none has it again.
    const firstWithout = await eventually('a report without the acked job', async () => {
      const i = states.findIndex((s, idx) => idx >= afterAck && !(m.job_id in s));
      return i >= 0 ? i + 1 : undefined;
    });
    await eventually('two more heartbeats', async () => states.length >= firstWithout + 2);
    expect(states.slice(firstWithout - 1).every((s) => !(m.job_id in s))).toBe(true);
  });

  test('malformed deploy messages are dropped and the next good one still completes', async () => {
    await publish(topics.deploy(robot.id), 'this is not json');
    await publish(topics.deploy(robot.id), JSON.stringify({ job_id: 42, deploy_path: 'x' }));
    await publish(topics.deploy(robot.id), JSON.stringify([1, 2, 3]));
    const body = crypto.randomBytes(64 * 1024);
    const m = await deployMessage('after-garbage.bin', body);
    await publish(topics.deploy(robot.id), JSON.stringify(m));
    await waitForStatus(m.job_id, 'COMPLETED');
    expect(fs.readFileSync(m.deploy_path).equals(body)).toBe(true);
    const logs = logLines(daemon!);
    expect(logs.some((l) => l.msg === 'deploy message is not JSON; dropped')).toBe(true);
    expect(logs.filter((l) => l.msg === 'deploy message does not match the schema; dropped')).toHaveLength(2);
    expect(daemon!.proc.exitCode).toBeNull();
  });

  test('a deploy outside the robot root fails with a clear message and writes nothing', async () => {
    const outside = path.join(os.tmpdir(), uniqueId('ota-outside'), 'evil.bin');
    const m = await deployMessage('unused', Buffer.from('evil'), { deploy_path: outside });
    await publish(topics.deploy(robot.id), JSON.stringify(m));
    const failed = await waitForStatus(m.job_id, 'FAILED');
    expect(failed.error_msg).toBe(`deploy_path ${outside} is outside the allowed roots`);
    expect(fs.existsSync(path.dirname(outside))).toBe(false);
  });

  test('a sha256 mismatch is FAILED with both digests and the previous file stays', async () => {
    const target = path.join(workDir, 'keep.conf');
    fs.mkdirSync(workDir, { recursive: true });
    fs.writeFileSync(target, 'previous\n', { mode: 0o600 });
    const body = Buffer.from('corrupted in transit');
    const m = await deployMessage('keep.conf', body, { sha256: 'f'.repeat(64) });
    await publish(topics.deploy(robot.id), JSON.stringify(m));
    const failed = await waitForStatus(m.job_id, 'FAILED');
    expect(failed.error_msg).toBe(`sha256 mismatch: expected ${'f'.repeat(64)}, got ${sha256(body)}`);
    expect(fs.readFileSync(target, 'utf8')).toBe('previous\n');
    expect(fs.existsSync(`${target}.part`)).toBe(false);
  });

  test('a reference-shaped message (no url, no sha256) fails without S3 keys, and is fetched with keys given by hand', async () => {
    const body = crypto.randomBytes(200 * 1024);
    const key = `daemon-it/${uniqueId('ref')}`;
    await upload(key, body);
    // A provisioned config holds no S3 credential: such a message cannot be fetched.
    const without = { job_id: uniqueId('job'), s3_bucket: bucket, s3_object_name: key, deploy_path: path.join(workDir, 'ref-nokeys.bin') };
    await publish(topics.deploy(robot.id), JSON.stringify(without));
    expect((await waitForStatus(without.job_id, 'FAILED')).error_msg).toMatch(/no url and the daemon has no S3 credentials/);
    expect(fs.existsSync(without.deploy_path)).toBe(false);

    // The robot's operator gives it S3 keys by hand (as for the reference daemon): the daemon presigns (SigV4).
    await daemon!.kill('SIGTERM');
    writeConfig({
      region_name: cfg.s3.region,
      endpoint_url: cfg.s3.endpoint,
      aws_access_key_id: cfg.s3.accessKeyId,
      aws_secret_access_key: cfg.s3.secretAccessKey,
    });
    await startDaemon();
    try {
      const m = { job_id: uniqueId('job'), s3_bucket: bucket, s3_object_name: key, deploy_path: path.join(workDir, 'ref.bin') };
      await publish(topics.deploy(robot.id), JSON.stringify(m));
      await waitForStatus(m.job_id, 'COMPLETED');
      expect(fs.readFileSync(m.deploy_path).equals(body)).toBe(true);
    } finally {
      await daemon!.kill('SIGTERM');
      writeConfig();
      await startDaemon();
    }
  });

  test('a redelivered deploy of a completed job is re-reported without a second download', async () => {
    const m = await deployMessage('once.bin', crypto.randomBytes(128 * 1024));
    await publish(topics.deploy(robot.id), JSON.stringify(m));
    await waitForStatus(m.job_id, 'COMPLETED');
    const mtime = fs.statSync(m.deploy_path).mtimeMs;
    const seen = states.length;
    await publish(topics.deploy(robot.id), JSON.stringify(m));
    await eventually('re-report', async () => states.slice(seen).some((s) => s[m.job_id]?.status === 'COMPLETED'));
    expect(fs.statSync(m.deploy_path).mtimeMs).toBe(mtime);
    const completions = logLines(daemon!).filter((l) => l.msg === 'job completed' && l.job_id === m.job_id);
    expect(completions).toHaveLength(1);
  });

  test('SIGKILL during a large download: after a restart it resumes and fetches only the remaining bytes', async () => {
    // A bandwidth cap makes the download last long enough to be killed in the middle.
    await daemon!.kill('SIGTERM');
    writeConfig({ max_download_bytes_per_s: 32 * MiB });
    await startDaemon();

    const body = crypto.randomBytes(96 * MiB);
    const m = await deployMessage('large.bin', body);
    await publish(topics.deploy(robot.id), JSON.stringify(m));
    const part = `${m.deploy_path}.part`;
    await eventually('20 MiB on disk', async () => (fs.statSync(part, { throwIfNoEntry: false })?.size ?? 0) >= 20 * MiB, 30000);
    const offlineBefore = presence.filter((p) => p === 'offline').length;
    await daemon!.kill('SIGKILL');
    const kept = fs.statSync(part).size;
    expect(kept).toBeLessThan(body.length);
    // The broker publishes the Last Will for the killed daemon.
    await eventually('last will', async () => presence.filter((p) => p === 'offline').length > offlineBefore);

    writeConfig();
    const restarted = await startDaemon();
    await waitForStatus(m.job_id, 'COMPLETED', 60000);
    expect(sha256(fs.readFileSync(m.deploy_path))).toBe(m.sha256);
    const done = logLines(restarted).find((l) => l.msg === 'job completed' && l.job_id === m.job_id);
    expect(done).toBeDefined();
    expect(done!.resumed_from).toBeGreaterThanOrEqual(kept);
    expect(done!.fetched).toBe(body.length - (done!.resumed_from as number));
    expect(done!.fetched as number).toBeLessThan(body.length - 20 * MiB + MiB);
    expect(logLines(restarted).some((l) => l.msg === 'resuming job interrupted by the last shutdown' && l.job_id === m.job_id)).toBe(true);
  });

  test('cancel aborts an in-flight download: no install, no .part, no more reports, redelivery ignored', async () => {
    await daemon!.kill('SIGTERM');
    writeConfig({ max_download_bytes_per_s: 8 * MiB });
    await startDaemon();
    const m = await deployMessage('canceled.bin', crypto.randomBytes(48 * MiB));
    await publish(topics.deploy(robot.id), JSON.stringify(m));
    const part = `${m.deploy_path}.part`;
    await eventually('download started', async () => (fs.statSync(part, { throwIfNoEntry: false })?.size ?? 0) > MiB);
    await publish(topics.cancel(robot.id), m.job_id);
    await eventually('.part removed', async () => !fs.existsSync(part));
    expect(fs.existsSync(m.deploy_path)).toBe(false);
    const seen = states.length;
    await publish(topics.deploy(robot.id), JSON.stringify(m));
    await eventually('two more heartbeats', async () => states.length >= seen + 2);
    expect(states.slice(seen).every((s) => !(m.job_id in s))).toBe(true);
    expect(fs.existsSync(m.deploy_path)).toBe(false);
  });

  test('a deploy published while the daemon is down is delivered by its persistent session', async () => {
    await daemon!.kill('SIGTERM');
    writeConfig();
    const m = await deployMessage('queued-offline.bin', crypto.randomBytes(256 * 1024));
    await publish(topics.deploy(robot.id), JSON.stringify(m));
    await startDaemon();
    await waitForStatus(m.job_id, 'COMPLETED');
    expect(sha256(fs.readFileSync(m.deploy_path))).toBe(m.sha256);
  });

  test('a second daemon on the same state dir refuses to start and leaves the first one running', async () => {
    const second = runTs('daemon/main.ts', {}, ['--config', configFile]);
    await eventually('second daemon exits', async () => second.proc.exitCode !== null);
    expect(second.proc.exitCode).toBe(1);
    expect(second.output()).toContain(`another OTA daemon (pid ${daemon!.proc.pid}) is using state_dir`);
    expect(daemon!.proc.exitCode).toBeNull();
  });

  test('after a hard broker restart the daemon reconnects on its own and still takes deploys', async () => {
    const connects = () => logLines(daemon!).filter((l) => l.msg === 'connected to the broker').length;
    const before = connects();
    await restartServer(cfg, 'mosquitto', true);
    await eventually('daemon reconnected', async () => connects() > before, 30000);
    await eventually('test client reconnected', async () => cloud.connected, 30000);
    const m = await deployMessage('after-broker-restart.bin', crypto.randomBytes(100 * 1024));
    await publish(topics.deploy(robot.id), JSON.stringify(m));
    await waitForStatus(m.job_id, 'COMPLETED');
    expect(sha256(fs.readFileSync(m.deploy_path))).toBe(m.sha256);
  });

  test('SIGTERM publishes a retained "offline" and exits 0', async () => {
    const before = presence.length;
    const child = daemon!;
    await child.kill('SIGTERM');
    expect(child.proc.exitCode).toBe(0);
    await eventually('offline presence', async () => presence.slice(before).includes('offline'));
    daemon = null;
  });
});
