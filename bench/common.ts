// Helpers shared by the benchmarks: each runs on its own stack (own ports, data under .data/bench[-offset]) so it
// never disturbs `npm start` or the tests, starts the project's processes as children and samples their memory.
import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { sharedSecretSettings, signToken } from '../api/auth';
import { loadConfig, repoRoot, type Config } from '../common/config';
import { WORKER_NODE_FLAGS } from '../infra/apps';

// Every benchmark port lies below 32768, out of Linux's ephemeral range (32768-60999): thousands of robot connections
// take local ports from that range and once took a benchmark server's port before it bound.
export const BENCH_ENV: Record<string, string> = {
  FLEET_DATA_DIR: path.join(repoRoot, '.data', 'bench'),
  TEMPORAL_PORT: '22233',
  TEMPORAL_UI_PORT: '23233',
  MONGO_PORT: '22017',
  S3_PORT: '22070',
  MQTT_PORT: '16883',
  MQTT_CLOUD_PORT: '16884',
  FLEET_SSH_BASE_PORT: '17201',
  API_PORT: '24005',
  API_PUBLIC_URL: 'http://127.0.0.1:24005',
  TEMPORAL_TASK_QUEUE: 'bench',
  MQTT_BRIDGE_CLIENT_ID: 'cloud-bridge-bench',
  LOG_LEVEL: 'info',
};

export interface Child {
  proc: ChildProcess;
  out: () => string;
}

export function spawnTs(entry: string, args: string[], env: NodeJS.ProcessEnv, nodeFlags: string[] = []): Child {
  return spawnProcess(process.execPath, [...nodeFlags, '--import', 'tsx', path.join(repoRoot, entry), ...args], env);
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

function procStatusMb(pid: number, field: 'VmHWM' | 'VmRSS'): number {
  try {
    const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : 0;
  } catch {
    return 0;
  }
}
/** CPU time (user + system) a process has used so far, in seconds; 0 once it has exited. */
export function cpuSeconds(pid: number): number {
  try {
    // Fields after the command (which may hold spaces) start after its closing parenthesis; utime, stime are 14, 15.
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100; // clock ticks (USER_HZ = 100 on Linux)
  } catch {
    return 0;
  }
}

/** Peak resident set (VmHWM) of a process, in MiB; 0 once it has exited. */
export const peakRssMb = (pid: number) => procStatusMb(pid, 'VmHWM');
export const currentRssMb = (pid: number) => procStatusMb(pid, 'VmRSS');

/** Admin: a benchmark uploads, deploys and deletes its large file. Its 1 + robots + 2 requests stay under API_RATE_LIMIT. */
export const token = (cfg: Config): Promise<string> => signToken(sharedSecretSettings(cfg.api), { subject: 'bench', role: 'admin', ttl: '2h' });

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

export function curl(args: string[]): Promise<{ code: number; peakMb: number }> {
  return new Promise((resolve, reject) => {
    const p = spawn('curl', ['-sS', '--fail', ...args], { stdio: ['ignore', 'ignore', 'inherit'] });
    let peakMb = 0;
    const t = setInterval(() => (peakMb = Math.max(peakMb, peakRssMb(p.pid!))), 20);
    p.on('error', reject);
    p.on('exit', (code) => {
      clearInterval(t);
      resolve({ code: code ?? -1, peakMb });
    });
  });
}

/** The benchmark's environment: BENCH_ENV with every port moved by `offset` (two benchmarks side by side). */
export function benchEnv(offset: number, extra: Record<string, string> = {}): { env: NodeJS.ProcessEnv; cfg: Config } {
  const shifted = Object.fromEntries(
    Object.entries(BENCH_ENV).map(([k, v]) => [k, /_PORT$/.test(k) ? String(Number(v) + offset) : k === 'API_PUBLIC_URL' ? `http://127.0.0.1:${24005 + offset}` : v]),
  );
  const env = { ...process.env, ...shifted, FLEET_DATA_DIR: `${BENCH_ENV.FLEET_DATA_DIR}${offset ? `-${offset}` : ''}`, ...extra };
  return { env, cfg: loadConfig(env) };
}

/**
 * Starts the worker, the MQTT bridge and the API of the benchmark's stack, each once it is ready. Each child is
 * pushed onto `children` as soon as it is spawned, so a caller's cleanup also ends the ones started before a
 * failure (the array is also returned).
 */
export async function startCloud(env: NodeJS.ProcessEnv, children: Child[] = []): Promise<Child[]> {
  // The worker runs with the flags `npm start` gives it (its peak RSS is a figure of the rollout benchmark).
  const apps: [entry: string, ready: string, nodeFlags: string[]][] = [
    ['workers/main.ts', 'worker started', WORKER_NODE_FLAGS],
    ['workers/mqtt-bridge.ts', 'mqtt bridge started', []],
    ['api/main.ts', 'OTA API listening', []],
  ];
  for (const [entry, ready, nodeFlags] of apps) {
    const c = spawnTs(entry, [], env, nodeFlags);
    children.push(c);
    await waitOutput(c, ready);
  }
  return children;
}

/** Writes `mib` MiB of random bytes to `file`; returns their sha256. */
export function randomFile(file: string, mib: number): string {
  const h = crypto.createHash('sha256');
  const fd = fs.openSync(file, 'w');
  for (let i = 0; i < mib; i++) {
    const chunk = crypto.randomBytes(1024 * 1024);
    h.update(chunk);
    fs.writeSync(fd, chunk);
  }
  fs.closeSync(fd);
  return h.digest('hex');
}

/** Uploads a file through the API with curl (multipart, streaming); returns the stored object name. */
export function uploadWithCurl(api: string, authorization: string, file: string): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const p = spawn('curl', ['-sS', '--fail', '-X', 'POST', `${api}/file/upload`, '-H', `Authorization: ${authorization}`,
      '-F', 'file_info_list={"file_list":[{"s3_bucket":"files"}]}', '-F', `files=@${file}`], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.on('exit', (code) => (code === 0 ? resolve((JSON.parse(out) as Array<{ s3_object_name: string }>)[0].s3_object_name) : reject(new Error(`upload exited ${code}`))));
  });
}

/** A Temporal history event time (protobuf Timestamp) in epoch milliseconds; 0 when absent. */
export const eventMs = (t: { seconds?: unknown; nanos?: number | null } | null | undefined): number =>
  t ? Number(t.seconds ?? 0) * 1000 + Math.floor((t.nanos ?? 0) / 1e6) : 0;

export const fig = (k: string, v: number | string) => console.log(`${k}=${typeof v === 'number' ? Number(v.toFixed(3)) : v}`);
