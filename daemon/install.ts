// Puts a verified `.part` in place of the target: mode set, data fsynced, one atomic rename, directory
// fsynced. A reader of the target sees the old file or the new one, never a mix, even across a power cut.
import fsp from 'node:fs/promises';
import path from 'node:path';
import { errnoCode, fsyncDir } from './fs-util';

export const DEFAULT_FILE_MODE = 0o644;

export interface InstallRequest {
  part: string;
  target: string;
  /** Explicit mode from the deploy message; otherwise the replaced file's mode is kept (0644 for new files). */
  mode?: number;
  /** Checked right before the rename: the last moment a cancel can still prevent the install. */
  shouldAbort?: () => boolean;
}

export class InstallAbortedError extends Error {
  override name = 'InstallAbortedError';
}

export async function installPart(req: InstallRequest): Promise<{ mode: number }> {
  const existing = await fsp.stat(req.target).catch((e: unknown) => {
    if (errnoCode(e) === 'ENOENT') return null;
    throw e;
  });
  const mode = req.mode ?? (existing ? existing.mode & 0o7777 : DEFAULT_FILE_MODE);
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
  if (req.shouldAbort?.()) throw new InstallAbortedError('install aborted');
  await fsp.rename(req.part, req.target);
  await fsyncDir(path.dirname(req.target));
  return { mode };
}
