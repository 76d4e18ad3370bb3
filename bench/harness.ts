// What the benchmarks share: their own stack (own ports, data under .data/bench[-offset]), the cloud processes
// and the simulated robots (daemons hosted a few hundred per process, each with its own MQTT connection),
// process sampling and small helpers. Usage: startBenchSystem(args, robots) then stackDown(cfg) at the end.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { SignJWT } from 'jose';
import { loadConfig, repoRoot, type Config } from '../common/config';
import { connectDb, type Db } from '../common/db';
import type { RobotManifest } from '../infra/fleet';
import { stackDown, stackUp } from '../infra/stack';

export const BENCH_ENV: Record<string, string> = {
  FLEET_DATA_DIR: path.join(repoRoot, '.data', 'bench'),
  TEMPORAL_PORT: '47233',
  TEMPORAL_UI_PORT: '48233',
  MONGO_PORT: '47017',
  S3_PORT: '47070',
  MQTT_PORT: '41883',
  MQTT_CLOUD_PORT: '41884',
  FLEET_SSH_BASE_PORT: '42201',
  API_PORT: '49005',
  API_PUBLIC_URL: 'http://127.0.0.1:49005',
  TEMPORAL_TASK_QUEUE: 'bench',
  MQTT_BRIDGE_CLIENT_ID: 'cloud-bridge-bench',
  LOG_LEVEL: 'info',
};

export const DAEMON_HOSTS = 8;

export interface Child {
  proc: ChildProcess;
  out: () => string;
}

export function spawnTs(entry: string, args: string[], env: NodeJS.ProcessEnv): Child {
  return spawnProcess(process.execPath, ['--import', 'tsx', path.join(repoRoot, entry), ...args], env);
}

export function spawnProcess(command: string, args: string[], env: NodeJS.ProcessEnv): Child {
  const proc = spawn(command, args, { cwd: repoRoot, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  // Keep only the tail: the API and daemons log every request/job.
  const keep = (d: Buffer) => (out = (out + d.toString()).slice(-20000));
  proc.stdout!.on('data', keep);
  proc.stderr!.on('data', keep);
  return { proc, out: () => out };
}

export async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs: number, everyMs = 100): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export async function waitOutput(c: Child, text: string, timeoutMs = 90000): Promise<void> {
  await until(`"${text}"`, () => {
    if (c.proc.exitCode !== null) throw new Error(`process exited before "${text}":\n${c.out()}`);
    return c.out().includes(text);
  }, timeoutMs);
}

export function flag(args: string[], name: string, fallback: number): number {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : fallback;
}

export const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];

export function procStatusMb(pid: number, field: 'VmHWM' | 'VmRSS'): number {
  try {
    const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : 0;
  } catch {
    return 0;
  }
}
/** Peak resident set (VmHWM) of a process, in MiB; 0 once it has exited. */
export const peakRssMb = (pid: number) => procStatusMb(pid, 'VmHWM');
export const currentRssMb = (pid: number) => procStatusMb(pid, 'VmRSS');

export async function token(cfg: Config): Promise<string> {
  return new SignJWT({})
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject('bench')
    .setIssuer(cfg.api.jwtIssuer)
    .setAudience(cfg.api.jwtAudience)
    .setExpirationTime('2h')
    .sign(new TextEncoder().encode(cfg.api.jwtSecret));
}

/** Runs `count` commands with at most `parallel` at once; resolves with the wall time in seconds. */
export async function runPool(count: number, parallel: number, start: (i: number) => Promise<void>): Promise<number> {
  const t0 = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(parallel, count) }, async () => {
      while (next < count) await start(next++);
    }),
  );
  return (performance.now() - t0) / 1000;
}

export interface BenchSystem {
  env: NodeJS.ProcessEnv;
  cfg: Config;
  say: (line: string) => void;
  /** worker, bridge, API, then the daemon hosts. */
  children: Child[];
  db: { conn: Db; fleet: RobotManifest[] };
}

/**
 * Brings the benchmark's stack up with `robots` robots (no sshd: OTA needs none, which also lets a benchmark go
 * past FLEET_ROBOTS's cap), starts the worker, the bridge and the API, and hosts the robots' daemons in
 * `daemonHosts` processes. `--port-offset N` in args moves every port (two benchmarks side by side).
 */
export async function startBenchSystem(args: string[], robots: number, daemonHosts = DAEMON_HOSTS, extraEnv: Record<string, string> = {}): Promise<BenchSystem> {
  const offset = flag(args, '--port-offset', 0);
  const shifted = Object.fromEntries(
    Object.entries(BENCH_ENV).map(([k, v]) => [k, /_PORT$/.test(k) ? String(Number(v) + offset) : k === 'API_PUBLIC_URL' ? `http://127.0.0.1:${49005 + offset}` : v]),
  );
  const env = {
    ...process.env,
    ...shifted,
    FLEET_DATA_DIR: `${BENCH_ENV.FLEET_DATA_DIR}${offset ? `-${offset}` : ''}`,
    FLEET_ROBOTS: String(Math.min(robots, 1000)),
    ...extraEnv,
  };
  const cfg = loadConfig(env);
  const say = (l: string) => process.stderr.write(`[bench] ${l}\n`);
  const children: Child[] = [];
  try {
    const fleet = await stackUp(cfg, { robots, sshd: false, log: say });
    const apps = [
      ['workers/main.ts', 'worker started'],
      ['workers/mqtt-bridge.ts', 'mqtt bridge started'],
      ['api/main.ts', 'OTA API listening'],
    ] as const;
    for (const [entry, ready] of apps) {
      const c = spawnTs(entry, [], env);
      children.push(c);
      await waitOutput(c, ready);
    }
    const fleetRobots = fleet.robots.slice(0, robots);
    const groups = Array.from({ length: daemonHosts }, (_, g) => fleetRobots.filter((_, i) => i % daemonHosts === g));
    for (const g of groups.filter((x) => x.length > 0)) {
      const c = spawnTs('bench/daemon-host.ts', g.map((r) => r.daemonConfig), env);
      children.push(c);
      await waitOutput(c, `daemons started: ${g.length}`, 300000);
    }
    return { env, cfg, say, children, db: { conn: await connectDb(cfg), fleet: fleetRobots } };
  } catch (err) {
    // Nothing left running after a failed start (the caller's cleanup only covers a started system).
    for (const c of children) c.proc.kill('SIGTERM');
    await Promise.all(children.map((c) => (c.proc.exitCode === null ? new Promise((r) => c.proc.once('exit', r)) : undefined)));
    await stackDown(cfg);
    throw err;
  }
}
