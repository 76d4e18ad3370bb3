// Benchmark helper: runs many OTA daemons in one process, each with its own MQTT connection, journal and
// robot root (a 2-core machine cannot host hundreds of Node processes). Usage: daemon-host.ts <config.yaml>...
import { createLogger } from '../common/logger';
import { loadDaemonConfig } from '../daemon/config';
import { OtaDaemon } from '../daemon/ota-daemon';

async function main(): Promise<void> {
  const log = createLogger('daemon-host', 'warn');
  const daemons = process.argv.slice(2).map((file) => {
    const { config } = loadDaemonConfig(file, {});
    return new OtaDaemon(config, log.child({ robot_id: config.robotId }));
  });
  await Promise.all(daemons.map((d) => d.start()));
  process.stdout.write(`daemons started: ${daemons.length}\n`);
  await new Promise<void>((resolve) => process.once('SIGTERM', () => resolve()));
  await Promise.allSettled(daemons.map((d) => d.stop()));
  process.exit(0);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
