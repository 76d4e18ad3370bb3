// A robot running the reference daemon (nvidia-isaac/ota-file-service, notes/ota-file-service.md §3.3) gets its
// jobs: the client below behaves exactly like it on the wire: MQTT 3.1.1, clean session, QoS 0 subscriptions to
// deploy and ack, its whole job map on ota/<id>/state every second, no presence, no Last Will. It logs in with
// the credential `npm run robot -- add` issued. Its state messages are its presence, and a job its map lacks is
// sent again, so it gets its job at once when online, and after an offline period too.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { cfg, runTs } from '../helpers';
import { deployFromS3, startOtaSystem, uploadFile, waitForJob, type OtaSystem } from './system';

let sys: OtaSystem;
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'ota-refd-'));
const root = path.join(work, 'root');
const robotId = `refd-${crypto.randomBytes(3).toString('hex')}`;
let password = '';

/** The reference daemon's MQTT behaviour, downloading through the message's URL (it has no S3 key here). */
class ReferenceLikeDaemon {
  private client: MqttClient | null = null;
  private timer: NodeJS.Timeout | null = null;
  readonly jobs = new Map<string, { status: string; error_msg: string | null }>();
  deploysReceived = 0;

  async start(): Promise<void> {
    const client = await mqtt.connectAsync(cfg.mqtt.url, {
      protocolVersion: 4,
      clean: true,
      clientId: `paho-${crypto.randomBytes(4).toString('hex')}`, // random, as paho's default (the broker binds it to the user)
      username: robotId,
      password,
      keepalive: 60,
      reconnectPeriod: 500,
    });
    this.client = client;
    client.on('message', (topic, payload) => void this.onMessage(topic, payload.toString()));
    await client.subscribeAsync([`ota/${robotId}/deploy`, `ota/${robotId}/ack`], { qos: 0 });
    this.timer = setInterval(() => client.publish(`ota/${robotId}/state`, JSON.stringify(Object.fromEntries(this.jobs)), { qos: 0 }), 1000);
  }

  private async onMessage(topic: string, payload: string): Promise<void> {
    if (topic.endsWith('/ack')) {
      this.jobs.delete(payload);
      return;
    }
    const msg = JSON.parse(payload) as { job_id: string; deploy_path: string; url: string };
    this.deploysReceived++;
    if (this.jobs.has(msg.job_id)) return; // idempotent while remembered, as the reference
    this.jobs.set(msg.job_id, { status: 'RECEIVED', error_msg: null });
    try {
      const res = await fetch(msg.url);
      if (res.status !== 200) throw new Error(`HTTP ${res.status}`);
      fs.mkdirSync(path.dirname(msg.deploy_path), { recursive: true });
      fs.writeFileSync(msg.deploy_path, Buffer.from(await res.arrayBuffer()));
      this.jobs.set(msg.job_id, { status: 'COMPLETED', error_msg: null });
    } catch (e) {
      this.jobs.set(msg.job_id, { status: 'FAILED', error_msg: String(e) });
    }
  }

  /** Goes away without a word: no Last Will, no presence (the reference has neither); its job map is lost. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.client?.endAsync(true);
    this.jobs.clear();
  }
}

const refd = new ReferenceLikeDaemon();

beforeAll(async () => {
  sys = await startOtaSystem({ daemonsFor: [] });
  fs.mkdirSync(root);
  const cli = runTs('infra/robot-cli.ts', { MONGO_DB: sys.env.MONGO_DB, LOG_LEVEL: 'warn' }, ['add', robotId, '--root', root, '--config', path.join(work, 'cfg.yaml')]);
  await new Promise((r) => cli.proc.once('exit', r));
  const configPath = cli.output().trim().split('\n').pop()!;
  password = JSON.parse(/^mqtt_password: (.*)$/m.exec(fs.readFileSync(configPath, 'utf8'))![1]) as string;
});
afterAll(async () => {
  await refd.stop();
  await sys?.stop();
  fs.rmSync(work, { recursive: true, force: true });
});

test('a reference-like robot gets its job, and again after an offline period', async () => {
  await refd.start();
  const first = crypto.randomBytes(20_000);
  const target1 = path.join(root, 'one.bin');
  const job1 = await deployFromS3(sys, await uploadFile(sys, 'one.bin', first), robotId, target1);
  expect((await waitForJob(sys, job1, ['COMPLETED', 'FAILED'], 30000)).status).toBe('COMPLETED');
  expect(fs.readFileSync(target1).equals(first)).toBe(true);
  // Its state messages were taken as presence.
  expect((await sys.db.models.RobotPresence.findById(robotId).lean())?.online).toBe(true);
  // The cloud acked: the robot stops reporting the job.
  await waitFor(() => !refd.jobs.has(job1), 10000);

  // Offline: it disappears without a Last Will, so the cloud still believes it online and its deploy is lost.
  await refd.stop();
  const second = crypto.randomBytes(20_000);
  const target2 = path.join(root, 'two.bin');
  const job2 = await deployFromS3(sys, await uploadFile(sys, 'two.bin', second), robotId, target2);
  await new Promise((r) => setTimeout(r, 3000));
  expect(await sys.storedStatus(job2)).toBe('PENDING');
  expect(fs.existsSync(target2)).toBe(false);

  // Back with an empty map: the job it lacks is sent again.
  const before = refd.deploysReceived;
  await refd.start();
  expect((await waitForJob(sys, job2, ['COMPLETED', 'FAILED'], 40000)).status).toBe('COMPLETED');
  expect(fs.readFileSync(target2).equals(second)).toBe(true);
  expect(refd.deploysReceived).toBeGreaterThan(before);
  expect(sys.bridge.output()).toMatch(/missing from the robot's state map: sent again/);
}, 120000);

async function waitFor(check: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 100));
  }
}
