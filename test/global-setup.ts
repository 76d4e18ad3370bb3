// Brings the real stack up once for the whole run (idempotent: reuses a stack that `npm start` left running).
import { loadConfig } from '../common/config';
import { stackUp } from '../infra/stack';

export default async function globalSetup(): Promise<void> {
  const cfg = loadConfig();
  const started = Date.now();
  await stackUp(cfg, { robots: Math.max(cfg.fleet.robots, 3), log: (l) => process.stdout.write(`[stack] ${l}\n`) });
  process.stdout.write(`[stack] ready in ${Date.now() - started} ms\n`);
}
