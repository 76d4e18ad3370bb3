// Puts a verified `.part` in place of the target: mode set, data fsynced, one atomic rename, directory
// fsynced. A reader of the target sees the old file or the new one, never a mix, even across a power cut.
import fsp from 'node:fs/promises';
import path from 'node:path';
import { errnoCode, fsyncDir } from './fs-util';

export const DEFAULT_FILE_MODE = 0o644;

export interface InstallRequest {
  part: string;
  target: string;
  /**
   * Explicit mode from the deploy message (checked upstream: no setuid/setgid); otherwise the replaced file's
   * mode without its setuid/setgid bits (0644 for new files).
   */
  mode?: number;
  /**
   * Called right before the rename, with nothing awaited in between: `false` aborts the install (the target is
   * untouched), `true` commits to it. The caller records the commit in the same call, so a cancel handled later
   * knows the file is (being) installed: no cancel can be accepted while a rename it did not stop goes ahead.
   */
  commit?: () => boolean;
}

/**
 * Bits a replaced file passes on to its successor: permissions and sticky, never setuid/setgid. An OTA update
 * must not silently produce a new privileged binary because the old file was one (an explicit message mode
 * with those bits is refused in deploy-job.ts for the same reason).
 */
export const KEPT_MODE_MASK = 0o1777;

export class InstallAbortedError extends Error {
  override name = 'InstallAbortedError';
}

export async function installPart(req: InstallRequest): Promise<{ mode: number }> {
  const existing = await fsp.stat(req.target).catch((e: unknown) => {
    if (errnoCode(e) === 'ENOENT') return null;
    throw e;
  });
  const mode = req.mode ?? (existing ? existing.mode & KEPT_MODE_MASK : DEFAULT_FILE_MODE);
  const fh = await fsp.open(req.part, 'r+');
  try {
    // fchmod is not subject to the umask, unlike the mode given to open().
    await fh.chmod(mode);
    if (existing && process.getuid?.() === 0 && (existing.uid !== 0 || existing.gid !== 0)) {
      // As root, a replaced file keeps its owner, so the service that reads it still can.
      await fh.chown(existing.uid, existing.gid);
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
  if (req.commit && !req.commit()) throw new InstallAbortedError('install aborted');
  await fsp.rename(req.part, req.target);
  await fsyncDir(path.dirname(req.target));
  return { mode };
}
