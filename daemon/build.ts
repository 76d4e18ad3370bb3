// Builds the robot artifact: the daemon and everything it imports in one CommonJS file that plain `node` runs
// (no tsx, no node_modules on the robot). Usage: `npm run build:daemon` → dist/ota-daemon.cjs.
import path from 'node:path';
import { build, type BuildOptions } from 'esbuild';
import { repoRoot } from '../common/config';

/**
 * Node flags the daemon runs with (systemd unit `fleetsync-ota-daemon.service`, test/daemon/bundle.test.ts checks
 * they match; `npm run bench -- daemon` runs exactly these):
 * - a small young generation and old-space cap: the daemon never needs a large heap;
 * - --jitless: no JIT code space; the daemon's per-byte work (sha256, copies, I/O) is native, so the interpreter
 *   costs it little;
 * - --expose-gc: main.ts collects once the daemon is quiet (after connecting, after the last job), so V8 shrinks
 *   the young generation that startup or an install grew (~1 MB of RSS);
 * - --v8-pool-size=1: one V8 worker thread is plenty for a heap this size.
 */
export const DAEMON_NODE_FLAGS = ['--max-semi-space-size=1', '--max-old-space-size=64', '--jitless', '--expose-gc', '--v8-pool-size=1'];

export const DAEMON_BUNDLE = path.join(repoRoot, 'dist', 'ota-daemon.cjs');

const options = (outfile: string): BuildOptions => ({
  entryPoints: [path.join(repoRoot, 'daemon', 'main.ts')],
  outfile,
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  // Less source text for V8 to hold and parse on the robot.
  minify: true,
  sourcemap: false,
  legalComments: 'none',
  logLevel: 'warning',
});

export async function buildDaemonBundle(outfile = DAEMON_BUNDLE): Promise<string> {
  await build(options(outfile));
  return outfile;
}

/** The npm packages the bundle contains (tests keep it lean: none at all since the MQTT client is the daemon's own). */
export async function daemonBundlePackages(): Promise<string[]> {
  const { metafile } = await build({ ...options(path.join(repoRoot, 'dist', 'ota-daemon.meta.cjs')), write: false, metafile: true });
  const packages = new Set<string>();
  for (const input of Object.keys(metafile.inputs)) {
    const rest = input.split('node_modules/').pop()!;
    if (rest !== input) packages.add(rest.split('/').slice(0, rest.startsWith('@') ? 2 : 1).join('/'));
  }
  return [...packages].sort();
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
