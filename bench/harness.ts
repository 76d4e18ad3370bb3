// A benchmark's whole OTA system: its own stack (bench/common.ts: own ports, data under .data/bench[-offset]),
// the cloud processes, and the simulated robots' daemons hosted a few hundred per process (each daemon with its
// own MQTT connection). Used by ota-rollout; stop it with stopBenchSystem.
import fs from 'node:fs';
import { connectDb, type Db } from '../common/db';
import type { Config } from '../common/config';
import type { RobotManifest } from '../infra/fleet';
import { stackDown, stackUp } from '../infra/stack';
import { benchEnv, flag, spawnTs, startCloud, waitOutput, type Child } from './common';

export const DAEMON_HOSTS = 8;

export interface BenchSystem {
  env: NodeJS.ProcessEnv;
  cfg: Config;
  say: (line: string) => void;
  /** worker, bridge, API, then the daemon hosts. */
  children: Child[];
  db: { conn: Db; fleet: RobotManifest[] };
}

/** Ends the given children (SIGTERM) and waits for them. */
export async function stopChildren(children: readonly Child[]): Promise<void> {
  for (const c of children) c.proc.kill('SIGTERM');
  await Promise.all(children.map((c) => (c.proc.exitCode === null ? new Promise((r) => c.proc.once('exit', r)) : undefined)));
}

/**
 * Brings the benchmark's stack up with `robots` robots (no sshd: OTA needs none, which also lets a benchmark go
 * past FLEET_ROBOTS's cap of 1,000), starts the worker, the bridge and the API, and hosts the robots' daemons in
 * `daemonHosts` processes. `--port-offset N` in args moves every port. `fresh`: start from an empty data directory
 * (a reused one carries the last run's sessions and jobs: the bridge's persistent session then replays a fleet's
 * worth of presence messages before it can subscribe, which held its start past 90 s after a 1,000-robot run).
 */
export async function startBenchSystem(args: string[], robots: number, daemonHosts = DAEMON_HOSTS, fresh = false): Promise<BenchSystem> {
  const bench = () => benchEnv(flag(args, '--port-offset', 0), { FLEET_ROBOTS: String(Math.min(robots, 1000)) });
  const say = (l: string) => process.stderr.write(`[bench] ${l}\n`);
  const children: Child[] = [];
  if (fresh) {
    // A stack left running by an interrupted run owns the directory: stop it before the data goes. The
    // configuration is read again afterwards: it includes the secrets kept in the data directory.
    const old = bench().cfg;
    await stackDown(old).catch(() => undefined);
    fs.rmSync(old.dataDir, { recursive: true, force: true });
    say(`fresh data directory ${old.dataDir}`);
  }
  const { env, cfg } = bench();
  try {
    const fleet = await stackUp(cfg, { robots, sshd: false, log: say });
    await startCloud(env, children);
    const fleetRobots = fleet.robots.slice(0, robots);
    const groups = Array.from({ length: daemonHosts }, (_, g) => fleetRobots.filter((_, i) => i % daemonHosts === g));
    // The hosts start side by side (each connects its daemons in parallel): one after the other, 10,000 robots
    // took minutes to come online.
    const hosts = groups.filter((x) => x.length > 0).map((g) => {
      const c = spawnTs('bench/daemon-host.ts', g.map((r) => r.daemonConfig), env);
      children.push(c);
      return { c, n: g.length };
    });
    await Promise.all(hosts.map(({ c, n }) => waitOutput(c, `daemons started: ${n}`, 300000)));
    return { env, cfg, say, children, db: { conn: await connectDb(cfg), fleet: fleetRobots } };
  } catch (err) {
    // Nothing left running after a failed start (the caller's cleanup only covers a started system).
    await stopChildren(children);
    await stackDown(cfg);
    throw err;
  }
}
