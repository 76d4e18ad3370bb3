// The artifact robots run: the esbuild bundle starts under plain node (no tsx, no node_modules next to it),
// connects with a robot's credentials, stops cleanly on SIGTERM, and refuses a bad config with exit status 2.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buildDaemonBundle, DAEMON_NODE_FLAGS, daemonBundlePackages } from '../../daemon/build';
import { testRobots } from '../helpers';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ota-bundle-'));
let bundle: string;

beforeAll(async () => {
  // Built outside the repo, so a require() that escapes the bundle would fail to resolve.
  bundle = await buildDaemonBundle(path.join(dir, 'ota-daemon.cjs'));
}, 60000);
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function run(args: string[]): { done: Promise<number | null>; output: () => string; kill: () => void } {
  const p = spawn(process.execPath, [...DAEMON_NODE_FLAGS, bundle, ...args], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  p.stdout.on('data', (d: Buffer) => (out += d.toString()));
  p.stderr.on('data', (d: Buffer) => (out += d.toString()));
  return { done: new Promise((r) => p.on('exit', (code) => r(code))), output: () => out, kill: () => p.kill('SIGTERM') };
}

test('the bundled daemon connects as its robot and exits 0 on SIGTERM', async () => {
  const d = run(['--config', testRobots()[3].daemonConfig]);
  const deadline = Date.now() + 20000;
  while (!d.output().includes('connected to the broker')) {
    if (Date.now() > deadline) throw new Error(`bundle did not connect:\n${d.output()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  d.kill();
  expect(await d.done).toBe(0);
});

test('the bundled daemon exits 2 naming the key of an invalid config', async () => {
  const bad = path.join(dir, 'bad.yaml');
  fs.writeFileSync(bad, 'robot_id: "no spaces allowed"\nallowed_roots: []\n');
  const d = run(['--config', bad]);
  expect(await d.done).toBe(2);
  expect(d.output()).toMatch(/robot_id|allowed_roots/);
});

test('the bundle carries only what the daemon runs: no npm package at all (own MQTT and HTTP clients)', async () => {
  expect(await daemonBundlePackages()).toEqual([]);
  expect(fs.statSync(bundle).size).toBeLessThan(200 * 1024);
});

test('the systemd unit runs the bundle with exactly the flags the tests and the benchmark use', () => {
  const unit = fs.readFileSync(path.join(__dirname, '..', '..', 'daemon', 'fleetsync-ota-daemon.service'), 'utf8');
  const exec = /^ExecStart=(\S+) (.*) \/opt\/fleetsync\/ota-daemon\.cjs /m.exec(unit);
  expect(exec?.[1]).toBe('/usr/bin/node');
  expect(exec?.[2].split(' ')).toEqual(DAEMON_NODE_FLAGS);
});
