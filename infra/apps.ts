// The project's own long-running processes, managed like the servers (pid file, log file, idempotent start).
import path from 'node:path';
import { repoRoot, type Config } from '../common/config';
import type { FleetManifest } from './fleet';
import type { ProcessSpec } from './proc';

/**
 * The OTA worker's V8 flags. Node 22's larger default young generation added ~30 MB to the worker's peak RSS in a
 * 1,000-robot rollout (bench ota-rollout: 301 MB, against 276 MB with 8 MB semi-spaces and the same time).
 */
export const WORKER_NODE_FLAGS = ['--max-semi-space-size=8'];

function tsApp(name: string, entry: string, readyText: string, args: string[] = [], env?: NodeJS.ProcessEnv, nodeFlags: string[] = []): ProcessSpec {
  const file = path.join(repoRoot, entry);
  return {
    name,
    command: process.execPath,
    args: [...nodeFlags, '--import', 'tsx', file, ...args],
    cwd: repoRoot,
    env,
    // The marker includes the args so two daemons of the same entry file are told apart.
    marker: [file, ...args].join(' '),
    readyTimeoutMs: 90000,
    ready: async ({ logSinceStart }) => logSinceStart().includes(readyText),
  };
}

/** The demo: a worker, the MQTT bridge, the API, the demo center's offline app and an OTA daemon on each of the first FLEET_ROBOTS robots. */
export function appSpecs(cfg: Config, fleet: FleetManifest): ProcessSpec[] {
  return [
    tsApp('worker', 'workers/main.ts', 'worker started', [], undefined, WORKER_NODE_FLAGS),
    tsApp('mqtt-bridge', 'workers/mqtt-bridge.ts', 'mqtt bridge started'),
    { ...tsApp('api', 'api/main.ts', 'OTA API listening'), ports: [cfg.api.port] },
    // The demo center's offline app: its worker (center namespace) and its API.
    tsApp('offline-worker', 'workers/offline-worker.ts', 'offline worker started'),
    { ...tsApp('offline-api', 'api/offline/main.ts', 'offline API listening'), ports: [cfg.offline.api.port] },
    ...fleet.robots
      .slice(0, cfg.fleet.robots)
      // A robot's environment, not the cloud's: the daemon reads only its own config file.
      .map((r) =>
        tsApp(`daemon-${r.id}`, 'daemon/main.ts', 'connected to the broker', ['--config', r.daemonConfig], {
          PATH: process.env.PATH,
          HOME: process.env.HOME,
        }),
      ),
  ];
}
