// `npm run stack -- up|down|status [--robots N]`: the stack without the application processes.
import { loadConfig } from '../common/config';
import { stackDown, stackStatus, stackUp } from './stack';

async function main(): Promise<void> {
  const [cmd = 'status', ...rest] = process.argv.slice(2);
  const cfg = loadConfig();
  const robotsFlag = rest.indexOf('--robots');
  const robots = robotsFlag >= 0 ? Number(rest[robotsFlag + 1]) : undefined;
  const log = (l: string) => console.log(`[stack] ${l}`);
  if (cmd === 'up') await stackUp(cfg, { robots, log });
  else if (cmd === 'down') await stackDown(cfg, log);
  else if (cmd === 'status') for (const s of stackStatus(cfg)) console.log(`${s.name.padEnd(20)} ${s.pid ?? 'stopped'}`);
  else throw new Error(`unknown command ${cmd}: use up, down or status`);
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e instanceof Error ? e.message : e);
    process.exit(1);
  },
);
