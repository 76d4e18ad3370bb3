// Builds the robot artifact: the daemon and everything it imports in one CommonJS file that plain `node` runs
// (no tsx, no node_modules on the robot). Usage: `npm run build:daemon` → dist/ota-daemon.cjs.
import path from 'node:path';
import { build, type BuildOptions } from 'esbuild';
import { repoRoot } from '../common/config';

/**
 * Node flags the daemon runs with (systemd unit, benchmark): a small young generation keeps the streaming
 * download's short-lived buffers from inflating the resident set; the daemon never needs a large heap.
 */
export const DAEMON_NODE_FLAGS = ['--max-semi-space-size=1', '--max-old-space-size=96'];

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
  // mqtt.js requires `socks` only for a SOCKS proxy, which robots do not use (daemon/stubs/socks.ts).
  alias: { socks: path.join(repoRoot, 'daemon', 'stubs', 'socks.ts') },
});

export async function buildDaemonBundle(outfile = DAEMON_BUNDLE): Promise<string> {
  await build(options(outfile));
  return outfile;
}

/** The npm packages the bundle contains (tests keep it lean: no AWS SDK, zod, yaml or pino on a robot). */
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
