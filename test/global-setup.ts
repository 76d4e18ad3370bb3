// Brings the real stack up once for the whole run (idempotent: reuses a stack that `npm start` left running).
import { loadConfig } from '../common/config';
import { stackUp } from '../infra/stack';
import { TEST_ROBOTS } from './helpers';

export default async function globalSetup(): Promise<void> {
  const cfg = loadConfig();
  const started = Date.now();
  // The tests' own robots come after the demo fleet's (npm start runs daemons on the first FLEET_ROBOTS).
  await stackUp(cfg, { robots: cfg.fleet.robots + TEST_ROBOTS, log: (l) => process.stdout.write(`[stack] ${l}\n`) });
  process.stdout.write(`[stack] ready in ${Date.now() - started} ms\n`);
}
