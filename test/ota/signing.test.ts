// Signed deploys, against a real daemon process and the real broker: messages published on the robot's deploy
// topic by hand (as an attacker on the cloud side, or a replay, would) with a missing, bad, misdirected or expired
// signature are refused: the job goes FAILED with the reason and nothing is written. A rotated key works: the
// daemon accepts every key its config lists, and the cloud signs with its newest.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import type { MqttClient } from 'mqtt';
import { connectMqtt, uniqueClientId } from '../../activities/mqtt/connection';
import { createS3Client } from '../../activities/s3/client';
import { topics, type StateMessage } from '../../common/protocol';
import { generateSigningKey, publicKeyEntry, signDeploy, type SigningKey } from '../../common/signing';
import { loadSigningKeys, newestSigningKey, rotateSigningKey } from '../../common/signing-keys';
import { cfg, eventually, robotEnv, runTs, testRobots, type ChildHandle } from '../helpers';

const [robot, other] = [testRobots()[2], testRobots()[3]];
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'ota-signing-'));
const s3 = createS3Client(cfg);
const [k1, k2, k3] = [generateSigningKey('k-old'), generateSigningKey('k-new'), generateSigningKey('k-unlisted')];
let cloud: MqttClient;
let daemon: ChildHandle;
const states = new Map<string, StateMessage[string]>();
let stateMessages = 0;
let object = '';
let url = '';
let sha256 = '';
const bytes = crypto.randomBytes(40_000);

beforeAll(async () => {
  // The robot's provisioned config, with the two keys of a rotation and a fresh journal.
  const base = YAML.parse(fs.readFileSync(robot.daemonConfig, 'utf8')) as Record<string, unknown>;
  const config = path.join(work, 'ota-daemon.yaml');
  fs.writeFileSync(config, YAML.stringify({ ...base, state_dir: path.join(work, 'state'), signing_public_keys: [publicKeyEntry(k1), publicKeyEntry(k2)] }), { mode: 0o600 });
  cloud = await connectMqtt(cfg, { clientId: uniqueClientId('cloud-signing-test') });
  cloud.on('message', (_topic, payload) => {
    stateMessages++;
    for (const [id, report] of Object.entries(JSON.parse(payload.toString()) as StateMessage)) states.set(id, report);
  });
  await cloud.subscribeAsync(topics.state(robot.id), { qos: 1 });
  object = `signing-${Date.now()}.bin`;
  await s3.send(new PutObjectCommand({ Bucket: 'files', Key: object, Body: bytes }));
  url = await getSignedUrl(s3, new GetObjectCommand({ Bucket: 'files', Key: object }), { expiresIn: 600 });
  sha256 = crypto.createHash('sha256').update(bytes).digest('hex');
  daemon = runTs('daemon/main.ts', { ...robotEnv(), LOG_LEVEL: 'info' }, ['--config', config], false);
  await daemon.waitForOutput('connected to the broker', 30000);
  // Its first state map is published once its subscriptions are in place: deploys sent from now on reach it.
  await eventually('first state map', async () => stateMessages > 0);
});
afterAll(async () => {
  await daemon?.kill();
  await cloud?.endAsync();
  s3.destroy();
  fs.rmSync(work, { recursive: true, force: true });
});

interface Deploy {
  key?: SigningKey;
  /** Robot the signature is made for (default: the receiving robot). */
  signedFor?: string;
  signedPath?: string;
  deployPath: string;
  expiresIn?: number;
  tamper?: (sig: { key_id: string; expires_at: number; value: string }) => void;
}

async function send(d: Deploy): Promise<string> {
  const jobId = crypto.randomUUID();
  const msg: Record<string, unknown> = { job_id: jobId, s3_bucket: 'files', s3_object_name: object, deploy_path: d.deployPath, sha256, size: bytes.length, url };
  if (d.key) {
    const sig = signDeploy(d.key, {
      job_id: jobId,
      robot_id: d.signedFor ?? robot.id,
      sha256,
      size: bytes.length,
      deploy_path: d.signedPath ?? d.deployPath,
      expires_at: Math.floor(Date.now() / 1000) + (d.expiresIn ?? 600),
    });
    d.tamper?.(sig);
    msg.signature = sig;
  }
  await cloud.publishAsync(topics.deploy(robot.id), JSON.stringify(msg), { qos: 1 });
  return jobId;
}

const finalState = (jobId: string) =>
  eventually(`job ${jobId} finished`, async () => {
    const s = states.get(jobId);
    return s && (s.status === 'COMPLETED' || s.status === 'FAILED') ? s : undefined;
  }, 20000);

const target = (name: string) => path.join(robot.root, 'signed', `${Date.now()}-${name}`);

test.each([
  ['a missing signature', (p: string) => ({ deployPath: p }), /signature missing/],
  ['a bad signature', (p: string) => ({ deployPath: p, key: k2, tamper: (s: { value: string }) => (s.value = crypto.randomBytes(64).toString('base64')) }), /does not match/],
  ['a signature made for another robot', (p: string) => ({ deployPath: p, key: k2, signedFor: other.id }), /does not match/],
  ['a signature for another robot\'s path', (p: string) => ({ deployPath: p, key: k2, signedPath: path.join(other.root, 'signed', 'x.bin') }), /does not match/],
  ['a changed expiry', (p: string) => ({ deployPath: p, key: k2, tamper: (s: { expires_at: number }) => (s.expires_at += 3600) }), /does not match/],
  ['an expired signature', (p: string) => ({ deployPath: p, key: k2, expiresIn: -5 }), /signature expired/],
  ['a key the robot does not list', (p: string) => ({ deployPath: p, key: k3 }), /unknown key id k-unlisted/],
])('%s: the job FAILS with the reason and nothing is written', async (_name, make, reason) => {
  const deployPath = target('refused.bin');
  const jobId = await send(make(deployPath));
  const s = await finalState(jobId);
  expect(s.status).toBe('FAILED');
  expect(s.error_msg).toMatch(reason);
  expect(fs.existsSync(deployPath)).toBe(false);
  expect(fs.existsSync(`${deployPath}.part`)).toBe(false);
  expect(daemon.output()).toContain('deploy refused: signature check failed');
});

test('a message signed for this robot but replayed to another path is refused; a genuine one installs', async () => {
  // The cloud signed path A; the message is re-pointed at path B inside the same robot's root.
  const signedPath = target('genuine.bin');
  const redirected = target('redirected.bin');
  const replay = await send({ deployPath: redirected, signedPath, key: k2 });
  expect((await finalState(replay)).error_msg).toMatch(/does not match/);
  expect(fs.existsSync(redirected)).toBe(false);

  const genuine = await send({ deployPath: signedPath, key: k2 });
  expect((await finalState(genuine)).status).toBe('COMPLETED');
  expect(fs.readFileSync(signedPath).equals(bytes)).toBe(true);
});

test('key rotation: the previous key still verifies while listed, and the cloud signs with its newest key', async () => {
  const old = target('old-key.bin');
  const jobOld = await send({ deployPath: old, key: k1 });
  expect((await finalState(jobOld)).status).toBe('COMPLETED');
  expect(fs.readFileSync(old).equals(bytes)).toBe(true);

  // The cloud's key store (a scratch data dir: the stack's own keys stay as they are) signs with the newest key.
  const store = { dataDir: path.join(work, 'cloud'), env: 'test' as const, ota: { signingKeys: undefined } };
  const first = loadSigningKeys(store);
  const rotated = rotateSigningKey(store);
  const keys = loadSigningKeys(store);
  expect(keys.map((k) => k.id)).toEqual([first[0].id, rotated.id]);
  expect(newestSigningKey(keys).id).toBe(rotated.id);
});
