// The OTA system as real processes for end-to-end tests: a worker, the MQTT bridge, the API and one daemon per
// robot, each a child process a test can SIGKILL and start again. Each test file gets its own task queue,
// bridge client id and API port, so files never see each other's jobs.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import mqtt from 'mqtt';
import YAML from 'yaml';
import { SignJWT } from 'jose';
import { connectDb, type Db } from '../../common/db';
import type { RobotManifest } from '../../infra/fleet';
import { recordRobots } from '../../infra/robots';
import { findJob } from '../../activities/db/ota-jobs';
import { bridgeSessionIds, cfg, endMqttSessions, fleet, robotEnv, runTs, uniqueId, type ChildHandle } from '../helpers';

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}

/** An operator token (the role the end-to-end flows need: upload, deploy, cancel); admin where a test deletes. */
export async function apiToken(
  opts: { secret?: string; expiresIn?: string; alg?: 'HS256' | 'HS512'; audience?: string; role?: 'viewer' | 'operator' | 'admin' } = {},
): Promise<string> {
  return new SignJWT({ role: opts.role ?? 'operator' })
    .setProtectedHeader({ alg: opts.alg ?? 'HS256' })
    .setSubject('e2e-test')
    .setIssuer(cfg.api.jwtIssuer)
    .setAudience(opts.audience ?? cfg.api.jwtAudience)
    .setIssuedAt()
    .setExpirationTime(opts.expiresIn ?? '1h')
    .sign(new TextEncoder().encode(opts.secret ?? cfg.api.jwtSecret));
}

export interface OtaSystem {
  baseUrl: string;
  token: string;
  env: Record<string, string>;
  worker: ChildHandle;
  bridge: ChildHandle;
  api: ChildHandle;
  daemons: Map<string, ChildHandle>;
  startWorker(): Promise<ChildHandle>;
  startBridge(): Promise<ChildHandle>;
  startApi(): Promise<ChildHandle>;
  /** Runs the robot's daemon; `overrides` are merged into a copy of its ota-config.yaml (e.g. a bandwidth cap). */
  startDaemon(robot: RobotManifest, overrides?: Record<string, unknown>): Promise<ChildHandle>;
  /** Authenticated fetch against the API (`path` relative to /api/v1). */
  call(path: string, init?: RequestInit): Promise<Response>;
  /** This system's own database (the one its API and bridge use). */
  db: Db;
  /** A job's status read from the database, not through the API. */
  storedStatus(jobId: string): Promise<string | undefined>;
  stop(): Promise<void>;
}

export async function startOtaSystem(opts: { daemonsFor: RobotManifest[] }): Promise<OtaSystem> {
  const port = await freePort();
  const env: Record<string, string> = {
    // Own database per test file: a demo stack's bridge (npm start) sees the same robots' MQTT traffic but
    // finds none of these jobs, so it cannot interfere.
    MONGO_DB: uniqueId('ota_e2e').replace(/-/g, '_'),
    TEMPORAL_TASK_QUEUE: uniqueId('ota-e2e'),
    MQTT_BRIDGE_CLIENT_ID: uniqueId('cloud-bridge-e2e'),
    API_PORT: String(port),
    API_PUBLIC_URL: `http://127.0.0.1:${port}`,
    LOG_LEVEL: 'info',
  };
  const token = await apiToken({ role: 'admin' }); // the reference flow ends with a delete (admin)
  const db = await connectDb(cfg, env.MONGO_DB);
  // This system's own registry holds the simulated fleet, as the stack's does (stackUp).
  await recordRobots(db.models, fleet().robots.map((r) => ({ id: r.id, roots: [r.root] })));
  const sys: OtaSystem = {
    db,
    // Live or archived (the API moves finished jobs to the archive after a while).
    storedStatus: async (jobId) => (await findJob(db.models, jobId))?.status,
    baseUrl: `http://127.0.0.1:${port}/api/v1`,
    token,
    env,
    daemons: new Map(),
    worker: undefined as unknown as ChildHandle,
    bridge: undefined as unknown as ChildHandle,
    api: undefined as unknown as ChildHandle,
    async startWorker() {
      sys.worker = runTs('workers/main.ts', env);
      await sys.worker.waitForOutput('worker started', 90000);
      return sys.worker;
    },
    async startBridge() {
      sys.bridge = runTs('workers/mqtt-bridge.ts', env);
      await sys.bridge.waitForOutput('mqtt bridge started', 30000);
      return sys.bridge;
    },
    async startApi() {
      sys.api = runTs('api/main.ts', env);
      await sys.api.waitForOutput('OTA API listening', 30000);
      return sys.api;
    },
    async startDaemon(robot, overrides) {
      let config = robot.daemonConfig;
      if (overrides) {
        config = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ota-daemon-')), 'ota-config.yaml');
        const base = YAML.parse(fs.readFileSync(robot.daemonConfig, 'utf8')) as Record<string, unknown>;
        fs.writeFileSync(config, YAML.stringify({ ...base, ...overrides }), { mode: 0o600 });
      }
      // A robot's environment, not the cloud's: the daemon reads only its own config file.
      const d = runTs('daemon/main.ts', { ...robotEnv(), LOG_LEVEL: 'info' }, ['--config', config], false);
      sys.daemons.set(robot.id, d);
      await d.waitForOutput('connected to the broker', 30000);
      return d;
    },
    call(path, init = {}) {
      const headers = new Headers(init.headers);
      if (!headers.has('authorization')) headers.set('authorization', `Bearer ${token}`);
      return fetch(`${sys.baseUrl}${path}`, { ...init, headers });
    },
    async stop() {
      await Promise.allSettled([
        sys.worker?.kill(),
        sys.bridge?.kill(),
        sys.api?.kill(),
        ...[...sys.daemons.values()].map((d) => d.kill()),
      ]);
      await db.connection.dropDatabase();
      await db.close();
      // The bridge's persistent sessions would otherwise queue every robot's reports at the broker for a day.
      await endMqttSessions(bridgeSessionIds(env.MQTT_BRIDGE_CLIENT_ID, cfg.mqtt.bridgeLanes));
    },
  };
  await Promise.all([sys.startWorker(), sys.startBridge(), sys.startApi()]);
  await Promise.all(opts.daemonsFor.map((r) => sys.startDaemon(r)));
  return sys;
}

export interface JobState {
  job_id: string;
  status: string;
  error_msg: string | null;
  robot_id: string;
  deploy_path: string;
  progress?: number | null;
}

export async function jobState(sys: OtaSystem, jobId: string): Promise<JobState> {
  const res = await sys.call(`/job_state/${jobId}`);
  if (res.status !== 200) throw new Error(`job_state ${jobId}: ${res.status} ${await res.text()}`);
  return (await res.json()) as JobState;
}

export async function waitForJob(sys: OtaSystem, jobId: string, statuses: string[], timeoutMs = 20000): Promise<JobState> {
  const deadline = Date.now() + timeoutMs;
  let last: JobState | undefined;
  for (;;) {
    last = await jobState(sys, jobId).catch(() => last);
    if (last && statuses.includes(last.status)) return last;
    if (Date.now() > deadline) throw new Error(`job ${jobId} not ${statuses.join('|')} after ${timeoutMs} ms: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Uploads bytes through the reference's multipart shape; returns the stored object name. */
export async function uploadFile(sys: OtaSystem, name: string, bytes: Buffer, info: Record<string, unknown> = {}): Promise<string> {
  const form = new FormData();
  form.append('file_info_list', JSON.stringify({ file_list: [{ s3_bucket: 'files', ...info }] }));
  form.append('files', new Blob([bytes]), name);
  const res = await sys.call('/file/upload', { method: 'POST', body: form });
  const body = (await res.json()) as Array<{ s3_object_name: string; state: string }>;
  if (res.status !== 200) throw new Error(`upload: ${res.status} ${JSON.stringify(body)}`);
  return body[0].s3_object_name;
}

export async function deployFromS3(sys: OtaSystem, objectName: string, robotId: string, deployPath: string, extra = ''): Promise<string> {
  const q = new URLSearchParams({ robot_id: robotId, s3_bucket: 'files', s3_object_name: objectName, deploy_path: deployPath });
  const res = await sys.call(`/file/deploy_from_s3?${q}${extra}`, { method: 'POST' });
  const body = (await res.json()) as { job_id: string; state: string };
  if (res.status !== 200) throw new Error(`deploy_from_s3: ${res.status} ${JSON.stringify(body)}`);
  return body.job_id;
}

/** An MQTT 5 session under robot `robot`'s own identity (its daemon's credentials), e.g. to report as that robot. */
export function connectAsRobot(robot: RobotManifest, extra: mqtt.IClientOptions = {}): Promise<mqtt.MqttClient> {
  const conf = YAML.parse(fs.readFileSync(robot.daemonConfig, 'utf8')) as { mqtt_username: string; mqtt_password: string };
  return mqtt.connectAsync(cfg.mqtt.url, {
    clientId: conf.mqtt_username,
    username: conf.mqtt_username,
    password: conf.mqtt_password,
    protocolVersion: 5,
    reconnectPeriod: 0,
    ...extra,
  });
}

/** The daemon's JSON log lines with the given message. */
export function daemonLogLines(d: ChildHandle, msg: string): Array<Record<string, unknown>> {
  return d
    .output()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l.msg === msg);
}
