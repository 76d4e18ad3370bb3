// One daemon per state dir; a stale pid file (crash, SIGKILL, reboot, recycled pid) never blocks a start.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { lockStateDir, StateDirLockedError } from '../../daemon/lock';

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ota-lock-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

test('the first daemon takes the lock, a second is refused, release frees it', () => {
  const release = lockStateDir(dir);
  expect(fs.readFileSync(path.join(dir, 'daemon.pid'), 'utf8').trim()).toBe(String(process.pid));
  release();
  expect(fs.existsSync(path.join(dir, 'daemon.pid'))).toBe(false);
});

test('a pid file left by a dead process or an unrelated program is taken over', () => {
  fs.writeFileSync(path.join(dir, 'daemon.pid'), '999999999\n');
  lockStateDir(dir)();
  fs.writeFileSync(path.join(dir, 'daemon.pid'), '1\n'); // init: alive, but not a daemon
  lockStateDir(dir)();
});

test('a live daemon process keeps its lock', async () => {
  // A stand-in whose command line looks like the daemon's.
  const other = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 30000)', 'daemon/main.ts'], { stdio: 'ignore' });
  try {
    await new Promise((r) => setTimeout(r, 200));
    fs.writeFileSync(path.join(dir, 'daemon.pid'), `${other.pid}\n`);
    expect(() => lockStateDir(dir)).toThrow(StateDirLockedError);
    expect(() => lockStateDir(dir)).toThrow(`another OTA daemon (pid ${other.pid}) is using state_dir ${dir}`);
  } finally {
    other.kill('SIGKILL');
  }
});
