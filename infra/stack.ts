// The real local stack, started and stopped by the project itself (tools installed by infra/install.sh):
// Temporal dev server (SQLite file + Web UI), FerretDB (MongoDB wire protocol), versitygw (S3), Mosquitto
// (MQTT 5, password auth, per-robot ACL) and one OpenSSH sshd per simulated robot. Every start is idempotent;
// `down` ends only the processes whose pid files this stack wrote.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { CreateBucketCommand, HeadBucketCommand } from '@aws-sdk/client-s3';
import mongoose from 'mongoose';
import type { Config } from '../common/config';
import { createS3Client } from '../activities/s3/client';
import { provisionFleet, type FleetManifest } from './fleet';
import { brokerRobotPasswordFile, recordRobots } from './robots';
import { registerRobotModels } from '../common/models/robots';
import {
  ensureProcess,
  killProcess,
  knownProcesses,
  runningPid,
  stackPaths,
  stopProcess,
  tcpOpen,
  waitFor,
  type ProcessPaths,
  type ProcessSpec,
} from './proc';

const run = promisify(execFile);

export const VERSIONS = { temporal: '1.9.1', ferretdb: '1.24.1', versitygw: '1.7.0', mosquitto: '2.0.11-deb12u2-fs2' } as const;
/** Keyword search attributes of the `fleet` namespace (SQLite visibility allows 10 Keyword columns). */
export const SEARCH_ATTRIBUTES = ['RobotId', 'CenterId', 'JobState', 'DeploymentId'] as const;
/** The offline app's namespace (`center`): its runs are found by center and robot. */
export const CENTER_SEARCH_ATTRIBUTES = ['CenterId', 'RobotId'] as const;

/** Namespaces the local dev server holds, with their search attributes: the cloud's and the demo center's. */
const namespaces = (cfg: Config): [string, readonly string[]][] => [
  [cfg.temporal.namespace, SEARCH_ATTRIBUTES],
  [cfg.offline.temporal.namespace, CENTER_SEARCH_ATTRIBUTES],
];

export { stackPaths };

export const tools = (cfg: Config) => ({
  temporal: path.join(cfg.toolsDir, `temporal-${VERSIONS.temporal}`, 'bin', 'temporal'),
  ferretdb: path.join(cfg.toolsDir, `ferretdb-${VERSIONS.ferretdb}`, 'ferretdb'),
  versitygw: path.join(cfg.toolsDir, `versitygw-${VERSIONS.versitygw}`, 'versitygw'),
  // Debian's 2.0.11 rebuilt by infra/install.sh with infra/tools/mosquitto/*.patch (a reload after a restart).
  mosquitto: path.join(cfg.toolsDir, `mosquitto-${VERSIONS.mosquitto}`, 'mosquitto'),
  mosquittoPasswd: '/usr/bin/mosquitto_passwd',
  sshd: '/usr/sbin/sshd',
});

function dir(...parts: string[]): string {
  const d = path.join(...parts);
  fs.mkdirSync(d, { recursive: true });
  return d;
}

async function temporalCli(cfg: Config, args: string[]): Promise<string> {
  const { stdout } = await run(tools(cfg).temporal, [...args, '--address', cfg.temporal.address], { timeout: 15000 });
  return stdout;
}

export function temporalSpec(cfg: Config): ProcessSpec {
  const data = dir(cfg.dataDir, 'temporal');
  const args = [
    'server', 'start-dev',
    '--ip', '127.0.0.1',
    '--port', String(cfg.temporal.port),
    '--ui-port', String(cfg.temporal.uiPort),
    '--db-filename', path.join(data, 'temporal.sqlite'),
    // WAL + synchronous=normal: ~2x the throughput of the defaults on this machine kind (STACK.md).
    '--sqlite-pragma', 'journal_mode=wal',
    '--sqlite-pragma', 'synchronous=normal',
    ...namespaces(cfg).flatMap(([ns]) => ['--namespace', ns]),
    '--dynamic-config-value', 'frontend.enableServerVersionCheck=false',
    '--ui-disable-news-fetch',
    '--log-level', 'warn',
    ...SEARCH_ATTRIBUTES.flatMap((a) => ['--search-attribute', `${a}=Keyword`]),
  ];
  return {
    name: 'temporal',
    command: tools(cfg).temporal,
    args,
    ports: [cfg.temporal.port, cfg.temporal.uiPort],
    readyTimeoutMs: 60000,
    ready: async () => {
      await temporalCli(cfg, ['operator', 'cluster', 'health']);
      await temporalCli(cfg, ['operator', 'namespace', 'describe', '--namespace', cfg.temporal.namespace]);
      return true;
    },
  };
}

/** Creates any missing namespace and search attribute (start-dev only covers fresh databases). */
async function ensureNamespaces(cfg: Config): Promise<void> {
  for (const [ns, attributes] of namespaces(cfg)) {
    const exists = await temporalCli(cfg, ['operator', 'namespace', 'describe', '--namespace', ns]).then(() => true, () => false);
    if (!exists) await temporalCli(cfg, ['operator', 'namespace', 'create', '--namespace', ns]);
    const listed = await temporalCli(cfg, ['operator', 'search-attribute', 'list', '--namespace', ns, '-o', 'json']);
    for (const name of attributes.filter((a) => !listed.includes(`"${a}"`))) {
      await temporalCli(cfg, ['operator', 'search-attribute', 'create', '--namespace', ns, '--name', name, '--type', 'Keyword']);
    }
  }
}

export function ferretdbSpec(cfg: Config): ProcessSpec {
  const data = dir(cfg.dataDir, 'ferretdb');
  return {
    name: 'ferretdb',
    command: tools(cfg).ferretdb,
    ports: [cfg.mongo.port],
    args: [
      '--handler=sqlite',
      // WAL without an fsync per commit (as Temporal's --sqlite-pragma above): FerretDB writes a document per
      // SQLite statement, and the fsync per document write dominated a 1,000-robot rollout. Still safe against a
      // killed process; only an OS crash may lose the last commits (local stack; production runs MongoDB).
      `--sqlite-url=file:${data}/?_pragma=synchronous(normal)`,
      `--state-dir=${data}`,
      `--listen-addr=127.0.0.1:${cfg.mongo.port}`,
      '--debug-addr=-',
      '--telemetry=disable',
      '--log-level=warn',
    ],
    ready: async () => {
      if (!(await tcpOpen(cfg.mongo.port))) return false;
      const conn = await mongoose.createConnection(cfg.mongo.url, { serverSelectionTimeoutMS: 2000 }).asPromise();
      try {
        await conn.db!.admin().command({ ping: 1 });
        return true;
      } finally {
        await conn.close();
      }
    },
  };
}

export function versitygwSpec(cfg: Config): ProcessSpec {
  const data = dir(cfg.dataDir, 's3', 'data');
  const iam = dir(cfg.dataDir, 's3', 'iam');
  return {
    name: 'versitygw',
    command: tools(cfg).versitygw,
    ports: [cfg.s3.port],
    args: ['--port', `127.0.0.1:${cfg.s3.port}`, '--iam-dir', iam, 'posix', data],
    // Credentials go through the environment, never the command line (visible in `ps`).
    env: { ...process.env, ROOT_ACCESS_KEY: cfg.s3.accessKeyId, ROOT_SECRET_KEY: cfg.s3.secretAccessKey },
    ready: () =>
      new Promise((resolve) => {
        const req = http.get({ host: '127.0.0.1', port: cfg.s3.port, path: '/', timeout: 1000 }, (res) => {
          res.resume();
          resolve(true);
        });
        req.on('error', () => resolve(false));
        req.on('timeout', () => req.destroy());
      }),
  };
}

async function ensureBuckets(cfg: Config): Promise<void> {
  const s3 = createS3Client(cfg);
  try {
    for (const Bucket of cfg.s3.buckets) {
      const exists = await s3.send(new HeadBucketCommand({ Bucket })).then(() => true, () => false);
      if (!exists) await s3.send(new CreateBucketCommand({ Bucket }));
    }
  } finally {
    s3.destroy();
  }
}

/**
 * Two listeners: robots connect to MQTT_PORT where the client id is forced to the user name (a robot cannot
 * take over another robot's session, and the `ota/%u/#` ACL binds to its identity); cloud processes connect to
 * the loopback cloud listener, where each (API, bridge, workers) has its own client id.
 */
function writeMosquittoConfig(cfg: Config): string {
  const d = dir(cfg.dataDir, 'mosquitto');
  // Robots' credentials (passwd-robots) are written by provisioning (infra/robots.ts), never rewritten here: robots
  // added with `npm run robot -- add` must survive a restart. The cloud user (ACL ota/#) has no business on the
  // robots' listener, so it has its own file.
  if (!fs.existsSync(brokerRobotPasswordFile(cfg))) fs.writeFileSync(brokerRobotPasswordFile(cfg), '', { mode: 0o600 });
  fs.writeFileSync(path.join(d, 'passwd-cloud'), `${cfg.mqtt.username}:${cfg.mqtt.password}\n`, { mode: 0o600 });
  fs.writeFileSync(
    path.join(d, 'acl'),
    [`user ${cfg.mqtt.username}`, 'topic readwrite ota/#', '', 'pattern readwrite ota/%u/#', ''].join('\n'),
  );
  const conf = [
    'per_listener_settings true',
    'persistence true',
    `persistence_location ${d}/`,
    // Save the in-memory database every second. Not on every change: Mosquitto rewrites the whole file each time,
    // and with 1,000 robots' sessions (~2 MB) that held the broker to a few messages a second. A SIGKILL loses at
    // most a second of queued messages, which the protocol recovers: daemons re-send their state map every
    // heartbeat until acked, and a robot's reconnect (presence) makes its open jobs dispatch again.
    'autosave_interval 1',
    'max_queued_messages 10000',
    // No OTA message comes near this (a deploy is ~1 KB, a state map of 500 jobs ~50 KB): a client sending a larger
    // packet is disconnected by the broker before the bridge ever parses it.
    'max_packet_size 262144',
    'log_dest stdout',
    'log_type error',
    'log_type warning',
    ...(os.userInfo().uid === 0 ? ['user root'] : []),
    '',
    `listener ${cfg.mqtt.port} 127.0.0.1`,
    'allow_anonymous false',
    `password_file ${path.join(d, 'passwd-robots')}`,
    `acl_file ${path.join(d, 'acl')}`,
    'use_username_as_clientid true',
    '',
    `listener ${cfg.mqtt.cloudPort} 127.0.0.1`,
    'allow_anonymous false',
    `password_file ${path.join(d, 'passwd-cloud')}`,
    `acl_file ${path.join(d, 'acl')}`,
    '',
  ].join('\n');
  fs.writeFileSync(path.join(d, 'mosquitto.conf'), conf);
  return d;
}

async function hashPasswords(cfg: Config, d: string): Promise<void> {
  // mosquitto_passwd -U hashes a plain user:password file in place (robots' entries are hashed by provisioning).
  await run(tools(cfg).mosquittoPasswd, ['-U', path.join(d, 'passwd-cloud')]);
}

/** Writes the broker's config, ACL and cloud password file under `<dataDir>/mosquitto`; returns that folder. */
export async function prepareBroker(cfg: Config): Promise<string> {
  const d = writeMosquittoConfig(cfg);
  await hashPasswords(cfg, d);
  return d;
}

export function mosquittoSpec(cfg: Config): ProcessSpec {
  const d = path.join(cfg.dataDir, 'mosquitto');
  return {
    name: 'mosquitto',
    command: tools(cfg).mosquitto,
    ports: [cfg.mqtt.port, cfg.mqtt.cloudPort],
    args: ['-c', path.join(d, 'mosquitto.conf')],
    ready: async () => (await tcpOpen(cfg.mqtt.port)) && (await tcpOpen(cfg.mqtt.cloudPort)),
  };
}

export const sshdName = (robot: string) => `sshd-${robot}`;

export function sshdSpec(robot: FleetManifest['robots'][number]): ProcessSpec {
  return {
    name: sshdName(robot.id),
    command: '/usr/sbin/sshd',
    // The config path is part of the marker so each robot's sshd is told apart from the others and the system's.
    args: ['-f', robot.sshdConfig, '-D', '-e'],
    marker: robot.sshdConfig,
    ports: [robot.ssh.port],
    ready: () => tcpOpen(robot.ssh.port),
  };
}

export interface StackStatus {
  name: string;
  pid: number | null;
}

export interface UpOptions {
  robots?: number;
  /** Start each robot's sshd (default). Benchmarks of MQTT-only paths turn it off for hundreds of robots. */
  sshd?: boolean;
  log?: (line: string) => void;
}

/** The simulated robots in the cloud's robot registry, like any provisioned robot (infra/robots.ts). */
async function registerFleet(cfg: Config, fleet: FleetManifest): Promise<void> {
  const conn = await mongoose.createConnection(cfg.mongo.url, { dbName: cfg.mongo.db, serverSelectionTimeoutMS: cfg.mongo.timeoutMs, retryWrites: false }).asPromise();
  try {
    await recordRobots(registerRobotModels(conn, cfg.mongo.timeoutMs), fleet.robots.map((r) => ({ id: r.id, roots: [r.root] })));
  } finally {
    await conn.close();
  }
}

/** Brings the servers and the simulated fleet up; a no-op for parts already running. */
export async function stackUp(cfg: Config, opts: UpOptions = {}): Promise<FleetManifest> {
  const log = opts.log ?? (() => undefined);
  const p = stackPaths(cfg);
  for (const [name, file] of Object.entries(tools(cfg))) {
    if (!fs.existsSync(file)) throw new Error(`${name} is not installed at ${file}: run infra/install.sh`);
  }
  const fleet = provisionFleet(cfg, opts.robots ?? cfg.fleet.robots);
  const report = (name: string, r: { started: boolean; pid: number }) =>
    log(`${r.started ? 'started' : 'running'} ${name} (pid ${r.pid})`);

  await prepareBroker(cfg);
  const [temporal, ferret, s3, mqtt] = await Promise.all([
    ensureProcess(p, temporalSpec(cfg)),
    ensureProcess(p, ferretdbSpec(cfg)),
    ensureProcess(p, versitygwSpec(cfg)),
    ensureProcess(p, mosquittoSpec(cfg)),
  ]);
  report('temporal', temporal);
  report('ferretdb', ferret);
  report('versitygw', s3);
  report('mosquitto', mqtt);
  // A running broker re-reads password and ACL files on SIGHUP: robots added since it started can log in.
  if (!mqtt.started) process.kill(mqtt.pid, 'SIGHUP');
  await ensureNamespaces(cfg);
  await ensureBuckets(cfg);
  await registerFleet(cfg, fleet);

  if (opts.sshd === false) {
    log(`${fleet.robots.length} simulated robots (MQTT only, no sshd)`);
    return fleet;
  }
  if (os.userInfo().uid === 0) fs.mkdirSync('/run/sshd', { recursive: true }); // sshd's privilege-separation dir
  const started = await Promise.all(fleet.robots.map((r) => ensureProcess(p, sshdSpec(r))));
  const fresh = started.filter((s) => s.started).length;
  log(`${fleet.robots.length} simulated robots (sshd ports ${cfg.fleet.sshBasePort}-${cfg.fleet.sshBasePort + fleet.robots.length - 1}; ${fresh} started now)`);
  return fleet;
}

/** Stops every process this stack started (apps first, servers last). */
export async function stackDown(cfg: Config, log: (line: string) => void = () => undefined): Promise<void> {
  const p = stackPaths(cfg);
  const servers = ['temporal', 'ferretdb', 'versitygw', 'mosquitto'];
  const names = knownProcesses(p);
  const apps = names.filter((n) => !servers.includes(n));
  await Promise.all(apps.map(async (n) => (await stopProcess(p, n)) && log(`stopped ${n}`)));
  await Promise.all(servers.map(async (n) => (await stopProcess(p, n, 10000)) && log(`stopped ${n}`)));
}

export function stackStatus(cfg: Config): StackStatus[] {
  const p = stackPaths(cfg);
  return knownProcesses(p).map((name) => ({ name, pid: runningPid(p, name) }));
}

/** Restarts one server process (fault-injection tests); `hard` uses SIGKILL instead of a clean stop. */
export async function restartServer(cfg: Config, name: 'mosquitto' | 'temporal' | 'ferretdb' | 'versitygw', hard = false): Promise<void> {
  const p = stackPaths(cfg);
  const spec = { mosquitto: mosquittoSpec, temporal: temporalSpec, ferretdb: ferretdbSpec, versitygw: versitygwSpec }[name](cfg);
  if (hard) await killProcess(p, name);
  else await stopProcess(p, name);
  await ensureProcess(p, spec);
}

export { waitFor };
