// The project's own long-running processes, managed like the servers (pid file, log file, idempotent start).
import path from 'node:path';
import { repoRoot, type Config } from '../common/config';
import type { FleetManifest } from './fleet';
import type { ProcessPaths, ProcessSpec } from './proc';

function tsApp(name: string, entry: string, readyText: string, args: string[] = []): ProcessSpec {
  const file = path.join(repoRoot, entry);
  return {
    name,
    command: process.execPath,
    args: ['--import', 'tsx', file, ...args],
    cwd: repoRoot,
    // The marker includes the args so two daemons of the same entry file are told apart.
    marker: [file, ...args].join(' '),
    readyTimeoutMs: 90000,
    ready: async ({ logSinceStart }) => logSinceStart().includes(readyText),
  };
}

export function appSpecs(_cfg: Config, _p: ProcessPaths, _fleet: FleetManifest): ProcessSpec[] {
  return [tsApp('worker', 'workers/main.ts', 'worker started')];
}
