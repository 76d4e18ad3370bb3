// Builds the robot artifact: the daemon and everything it imports in one CommonJS file that plain `node` runs
// (no tsx, no node_modules on the robot). Usage: `npm run build:daemon` → dist/ota-daemon.cjs.
import path from 'node:path';
import { build } from 'esbuild';
import { repoRoot } from '../common/config';

/**
 * Node flags the daemon runs with (systemd unit, benchmark): a small young generation keeps the streaming
 * download's short-lived buffers from inflating the resident set; the daemon never needs a large heap.
 */
export const DAEMON_NODE_FLAGS = ['--max-semi-space-size=1', '--max-old-space-size=96'];

export const DAEMON_BUNDLE = path.join(repoRoot, 'dist', 'ota-daemon.cjs');

export async function buildDaemonBundle(outfile = DAEMON_BUNDLE): Promise<string> {
  await build({
    entryPoints: [path.join(repoRoot, 'daemon', 'main.ts')],
    outfile,
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    sourcemap: false,
    legalComments: 'none',
    logLevel: 'warning',
  });
  return outfile;
}

if (require.main === module) {
  buildDaemonBundle().then(
    (f) => console.log(`built ${path.relative(process.cwd(), f)}; run: node ${DAEMON_NODE_FLAGS.join(' ')} ${path.relative(process.cwd(), f)} --config <file>`),
    (e: unknown) => {
      console.error(e);
      process.exit(1);
    },
  );
}
