// Entry point: `node dist/ota-daemon.cjs --config /etc/fleetsync/ota-daemon.yaml` (the bundle, daemon/build.ts),
// or `npx tsx daemon/main.ts --config …` in development.
// Exit codes: 0 after SIGTERM/SIGINT, 2 for an invalid config (systemd's Restart=on-failure then does not
// loop on a config that cannot work), 1 for anything unexpected (restarted by systemd).
import { createDaemonLogger as createLogger } from './log';
import { checkDaemonPaths, DaemonConfigError, describeConfig, loadDaemonConfig } from './config';
import { lockStateDir, StateDirLockedError } from './lock';
import { OtaDaemon } from './ota-daemon';

export const EXIT_CONFIG = 2;

const USAGE = 'usage: ota-daemon [--config <file.yaml>]   (without --config, the environment must hold the whole config)';

function configPath(argv: string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--config' || arg === '-c') {
      const value = argv[i + 1];
      if (!value) throw new DaemonConfigError(`--config needs a file path\n${USAGE}`);
      return value;
    }
    if (arg.startsWith('--config=')) return arg.slice('--config='.length);
    if (arg === '--help' || arg === '-h') {
      process.stdout.write(`${USAGE}\n`);
      process.exit(0);
    }
    throw new DaemonConfigError(`unknown argument ${arg}\n${USAGE}`);
  }
  return process.env.OTA_DAEMON_CONFIG || undefined;
}

/**
 * Under the unit's --expose-gc (daemon/build.ts DAEMON_NODE_FLAGS), two seconds after a burst of work: a full GC, then
 * a scavenge once its sweeping is done. Startup (and an install) leave V8's young generation grown and full of dead objects; collecting them in a
 * quiet moment lets V8 shrink it again, ~1 MB of RSS for the rest of an idle life, for a few ms of CPU.
 */
function settleHeap(): void {
  const gc = (globalThis as { gc?: (o?: { type: 'minor' | 'major' }) => void }).gc;
  if (!gc) return;
  // V8 shrinks the young generation only when the allocation rate is low: wait for the burst to pass.
  setTimeout(() => {
    gc();
    setTimeout(() => gc({ type: 'minor' }), 100).unref();
  }, 2000).unref();
}

async function main(): Promise<void> {
  const log = createLogger('ota-daemon');
  let daemon: OtaDaemon;
  let unlock: () => void;
  try {
    const file = configPath(process.argv.slice(2));
    const { config, unknownKeys } = loadDaemonConfig(file);
    checkDaemonPaths(config);
    unlock = lockStateDir(config.stateDir);
    if (unknownKeys.length > 0) log.warn({ keys: unknownKeys }, 'unknown config keys ignored');
    log.info({ config: describeConfig(config), file }, 'starting OTA daemon');
    daemon = new OtaDaemon(config, log.child({ robot_id: config.robotId }), { onQuiet: settleHeap });
  } catch (e) {
    if (e instanceof DaemonConfigError) {
      log.fatal({ error: e.message }, 'invalid OTA daemon configuration');
      process.exit(EXIT_CONFIG);
    }
    if (e instanceof StateDirLockedError) {
      // Exit 1, not 2: once the other daemon is gone, systemd's restart succeeds.
      log.fatal({ error: e.message }, 'state dir in use');
      process.exit(1);
    }
    throw e;
  }

  let stopping = false;
  const shutdown = (signal: NodeJS.Signals) => {
    if (stopping) {
      log.warn({ signal }, 'second signal; exiting now');
      process.exit(1);
    }
    stopping = true;
    log.info({ signal }, 'stopping');
    daemon.stop().then(
      () => {
        unlock();
        log.info('stopped');
        process.exit(0);
      },
      (e: unknown) => {
        log.error({ err: e }, 'unclean stop');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
  // Every handler is wrapped; reaching these means a bug. Exiting lets systemd restart a clean process rather
  // than leaving one that reports but no longer works (the reference's failure mode).
  process.on('unhandledRejection', (e) => {
    log.fatal({ err: e }, 'unhandled rejection');
    process.exit(1);
  });
  process.on('uncaughtException', (e) => {
    log.fatal({ err: e }, 'uncaught exception');
    process.exit(1);
  });
  await daemon.start();
}

main().catch((e: unknown) => {
  createLogger('ota-daemon').fatal({ err: e }, 'OTA daemon failed to start');
  process.exit(1);
});
