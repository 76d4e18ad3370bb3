// Background processes the stack owns: started detached with a pid file and a log file, recognised later by
// pid *and* command line (so a recycled pid is never killed), stopped with SIGTERM then SIGKILL.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

export interface ProcessSpec {
  name: string;
  command: string;
  args: string[];
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** A command-line substring unique to this process (default: the command); guards against recycled pids. */
  marker?: string;
  /** TCP ports the process listens on: they must be free before it starts (or its readiness check would be
   *  answered by whatever else holds them). */
  ports?: number[];
  /** Resolves true once the process serves; polled until `readyTimeoutMs`. `logSinceStart` reads what this
   *  process wrote to its log file (the file is shared with earlier runs). */
  ready: (ctx: { logSinceStart: () => string }) => Promise<boolean>;
  readyTimeoutMs?: number;
}

export interface ProcessPaths {
  runDir: string;
  logDir: string;
}

const pidFile = (p: ProcessPaths, name: string) => path.join(p.runDir, `${name}.pid`);
/** Where a stack keeps its pid files and logs. */
export const stackPaths = (cfg: { dataDir: string }): ProcessPaths => ({
  runDir: path.join(cfg.dataDir, 'run'),
  logDir: path.join(cfg.dataDir, 'logs'),
});

export const logFile = (p: ProcessPaths, name: string) => path.join(p.logDir, `${name}.log`);

function cmdline(pid: number): string | null {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
  } catch {
    return null;
  }
}

interface PidRecord {
  pid: number;
  /** A substring of the command line that identifies our process. */
  marker: string;
  /** Size of the log file when this process started. */
  logOffset: number;
}

function readPid(p: ProcessPaths, name: string): PidRecord | null {
  try {
    const rec = JSON.parse(fs.readFileSync(pidFile(p, name), 'utf8')) as PidRecord;
    return typeof rec.pid === 'number' && typeof rec.marker === 'string' ? rec : null;
  } catch {
    return null;
  }
}

/** The pid of our running process called `name`, or null (stale pid files are removed). */
export function runningPid(p: ProcessPaths, name: string): number | null {
  const rec = readPid(p, name);
  if (!rec) return null;
  const cl = cmdline(rec.pid);
  if (cl && cl.includes(rec.marker)) {
    // A zombie (killed but not yet reaped by its parent) still has a cmdline: treat it as gone.
    try {
      const stat = fs.readFileSync(`/proc/${rec.pid}/stat`, 'utf8');
      if (/\) Z /.test(stat)) return null;
    } catch {
      return null;
    }
    return rec.pid;
  }
  fs.rmSync(pidFile(p, name), { force: true });
  return null;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`${what} not ready after ${timeoutMs} ms`);
    await sleep(100);
  }
}

function tail(file: string, lines = 20): string {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

function logReader(file: string, from: number): () => string {
  return () => {
    if (!fs.existsSync(file)) return '';
    const fd = fs.openSync(file, 'r');
    try {
      const buf = Buffer.alloc(Math.max(0, fs.fstatSync(fd).size - from));
      fs.readSync(fd, buf, 0, buf.length, from);
      return buf.toString();
    } finally {
      fs.closeSync(fd);
    }
  };
}

/** Starts `spec` unless our process of that name already runs; returns whether it was started now. */
export async function ensureProcess(p: ProcessPaths, spec: ProcessSpec): Promise<{ started: boolean; pid: number }> {
  fs.mkdirSync(p.runDir, { recursive: true });
  fs.mkdirSync(p.logDir, { recursive: true });
  const existing = runningPid(p, spec.name);
  if (existing) {
    const ctx = { logSinceStart: logReader(logFile(p, spec.name), readPid(p, spec.name)?.logOffset ?? 0) };
    await waitFor(spec.name, () => spec.ready(ctx), spec.readyTimeoutMs ?? 30000);
    return { started: false, pid: existing };
  }
  for (const port of spec.ports ?? []) {
    if (await tcpOpen(port)) {
      throw new Error(`${spec.name}: port ${port} is already in use by a process this stack did not start; stop it or choose another port (see infra/README.md)`);
    }
  }
  const file = logFile(p, spec.name);
  const logOffset = fs.existsSync(file) ? fs.statSync(file).size : 0;
  const log = fs.openSync(file, 'a');
  const child = spawn(spec.command, spec.args, {
    cwd: spec.cwd,
    env: spec.env ?? process.env,
    detached: true,
    stdio: ['ignore', log, log],
  });
  fs.closeSync(log);
  const pid = child.pid;
  if (!pid) throw new Error(`${spec.name}: spawn failed (${spec.command})`);
  let exited: number | null = null;
  child.on('exit', (code) => (exited = code ?? -1));
  child.unref();
  fs.writeFileSync(pidFile(p, spec.name), JSON.stringify({ pid, marker: spec.marker ?? spec.command, logOffset } satisfies PidRecord));
  const ctx = { logSinceStart: logReader(file, logOffset) };
  try {
    await waitFor(
      spec.name,
      async () => {
        if (exited !== null) throw new Error(`exited with ${exited}`);
        return spec.ready(ctx);
      },
      spec.readyTimeoutMs ?? 30000,
    );
  } catch (e) {
    await stopProcess(p, spec.name);
    throw new Error(`${spec.name} failed to start: ${(e as Error).message}\n--- ${logFile(p, spec.name)} ---\n${tail(logFile(p, spec.name))}`);
  }
  return { started: true, pid };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/\) Z /.test(stat);
  } catch {
    return false;
  }
}

/** Stops our process `name` (SIGTERM, then SIGKILL after `graceMs`); a no-op when it is not running. */
export async function stopProcess(p: ProcessPaths, name: string, graceMs = 5000): Promise<boolean> {
  const pid = runningPid(p, name);
  if (!pid) return false;
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    /* already gone */
  }
  const deadline = Date.now() + graceMs;
  while (alive(pid) && Date.now() < deadline) await sleep(50);
  if (alive(pid)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
    while (alive(pid)) await sleep(20);
  }
  fs.rmSync(pidFile(p, name), { force: true });
  return true;
}

/** SIGKILL, for fault-injection tests: the process gets no chance to clean up. */
export async function killProcess(p: ProcessPaths, name: string): Promise<boolean> {
  const pid = runningPid(p, name);
  if (!pid) return false;
  process.kill(pid, 'SIGKILL');
  while (alive(pid)) await sleep(20);
  fs.rmSync(pidFile(p, name), { force: true });
  return true;
}

/** Names of every process with a pid file in runDir (running or stale). */
export function knownProcesses(p: ProcessPaths): string[] {
  if (!fs.existsSync(p.runDir)) return [];
  return fs
    .readdirSync(p.runDir)
    .filter((f) => f.endsWith('.pid'))
    .map((f) => f.slice(0, -4));
}

export function tcpOpen(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
    s.setTimeout(1000, () => {
      s.destroy();
      resolve(false);
    });
  });
}
