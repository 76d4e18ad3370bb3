// Shared test plumbing: config, Temporal client, the fleet, and real worker processes that tests can SIGKILL.
import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { loadConfig, repoRoot, type Config } from '../common/config';
import { readFleet, type FleetManifest } from '../infra/fleet';
import { connectMqtt } from '../activities/mqtt/connection';
import { laneClientId } from '../workers/bridge/lanes';

export const cfg: Config = loadConfig();
export const fleet = (): FleetManifest => readFleet(cfg);
/** Robots reserved for tests: after the demo fleet, so `npm start`'s daemons never compete with the tests'. */
export const TEST_ROBOTS = 4;
export const testRobots = () => fleet().robots.slice(cfg.fleet.robots, cfg.fleet.robots + TEST_ROBOTS);
export const uniqueId = (prefix: string) => `${prefix}-${Date.now().toString(36)}-${crypto.randomBytes(3).toString('hex')}`;

export async function temporalClient(): Promise<{ client: Client; close: () => Promise<void> }> {
  const connection = await Connection.connect({ address: cfg.temporal.address });
  return { client: new Client({ connection, namespace: cfg.temporal.namespace }), close: () => connection.close() };
}

export interface ChildHandle {
  proc: ChildProcess;
  output: () => string;
  /** Resolves once the output contains `text`. */
  waitForOutput: (text: string | RegExp, timeoutMs?: number) => Promise<void>;
  kill: (signal?: NodeJS.Signals) => Promise<void>;
}

/** The environment of a process that must not see the cloud's variables (a robot's daemon). */
export const robotEnv = (): Record<string, string> => ({ PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root' });

/**
 * Runs a TypeScript entry point (e.g. workers/main.ts) as a real process. `env` is added to this process's
 * environment, or replaces it when `inherit` is false.
 */
export function runTs(entry: string, env: Record<string, string> = {}, args: string[] = [], inherit = true): ChildHandle {
  return runProcess(process.execPath, ['--import', 'tsx', path.join(repoRoot, entry), ...args], env, inherit, entry);
}

/** Runs any program as a child process the test owns (output collected, killable). */
export function runProcess(command: string, args: string[], env: Record<string, string> = {}, inherit = true, entry = command): ChildHandle {
  const proc = spawn(command, args, {
    cwd: repoRoot,
    env: inherit ? { ...process.env, ...env } : env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  return {
    proc,
    output: () => out,
    waitForOutput: async (text, timeoutMs = 30000) => {
      const deadline = Date.now() + timeoutMs;
      const hit = () => (typeof text === 'string' ? out.includes(text) : text.test(out));
      while (!hit()) {
        if (proc.exitCode !== null) throw new Error(`${entry} exited (${proc.exitCode}) before "${text}":\n${out}`);
        if (Date.now() > deadline) throw new Error(`timeout waiting for "${text}" from ${entry}:\n${out}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    kill: async (signal = 'SIGTERM') => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      await exited;
    },
  };
}

export async function eventually<T>(what: string, fn: () => Promise<T | undefined | null | false>, timeoutMs = 20000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

export const sha256File = (file: string) => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');

/** Ends the broker-side persistent sessions of these client ids (a clean connect, then disconnect). */
export async function endMqttSessions(clientIds: string[]): Promise<void> {
  await Promise.all(
    clientIds.map(async (clientId) => {
      const c = await connectMqtt(cfg, { clientId, clean: true });
      await c.endAsync();
    }),
  );
}

/** Client ids of a bridge's sessions: its main connection and each state lane. */
export const bridgeSessionIds = (clientId: string, lanes: number) => [clientId, ...Array.from({ length: lanes }, (_, i) => laneClientId(clientId, i))];
