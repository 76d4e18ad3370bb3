// One daemon per state dir: two would share a journal and `.part` files, and (with one robot id) keep taking
// the MQTT session from each other. A pid file is enough; a stale one (crash, SIGKILL, reboot) is taken over,
// and a recycled pid belonging to an unrelated program does not count.
import fs from 'node:fs';
import path from 'node:path';
import { errnoCode } from './fs-util';

export class StateDirLockedError extends Error {
  override name = 'StateDirLockedError';
}

function isDaemon(pid: number): boolean {
  if (pid === process.pid) return false;
  try {
    process.kill(pid, 0);
  } catch (e) {
    if (errnoCode(e) !== 'EPERM') return false;
  }
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('main.ts');
  } catch {
    return false;
  }
}

/** Takes the lock or throws StateDirLockedError; returns the release function. */
export function lockStateDir(stateDir: string): () => void {
  const file = path.join(stateDir, 'daemon.pid');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      fs.writeFileSync(file, `${process.pid}\n`, { flag: 'wx', mode: 0o600 });
      return () => {
        try {
          if (fs.readFileSync(file, 'utf8').trim() === String(process.pid)) fs.unlinkSync(file);
        } catch {
          // already gone
        }
      };
    } catch (e) {
      if (errnoCode(e) !== 'EEXIST') throw e;
    }
    const owner = Number(fs.readFileSync(file, 'utf8').trim());
    if (Number.isInteger(owner) && owner > 0 && isDaemon(owner)) {
      throw new StateDirLockedError(`another OTA daemon (pid ${owner}) is using state_dir ${stateDir}`);
    }
    fs.rmSync(file, { force: true }); // stale
  }
  throw new StateDirLockedError(`could not lock state_dir ${stateDir}: another daemon is starting`);
}
