// The center's local file store: the content-addressed RF cache (RF_CACHE_DIR/<sha256>), the static images and a
// work directory per sync run (the /sync answer and the download plan live there, not in workflow history).
// Files enter the cache or the image directory only verified: `.part` + fsync + rename.
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from '../../common/config';

export interface CenterDirs {
  cache: string;
  images: string;
  work: string;
}

export function centerDirs(cfg: Config): CenterDirs {
  const base = path.dirname(cfg.offline.rfCacheDir);
  return { cache: cfg.offline.rfCacheDir, images: path.join(base, 'images'), work: path.join(base, 'sync') };
}

export const runDir = (dirs: CenterDirs, runId: string): string => {
  if (!/^[A-Za-z0-9-]+$/.test(runId)) throw new Error(`invalid run id ${runId}`);
  return path.join(dirs.work, runId);
};

const SHA256 = /^[0-9a-f]{64}$/;

/** The sha256s of every verified RF in the cache (one directory read: linear in the cache size). */
export function cachedRfs(dirs: CenterDirs): Set<string> {
  if (!fs.existsSync(dirs.cache)) return new Set();
  return new Set(fs.readdirSync(dirs.cache).filter((n) => SHA256.test(n)));
}

export const cachePath = (dirs: CenterDirs, sha256: string): string => {
  if (!SHA256.test(sha256)) throw new Error(`not a sha256: ${sha256}`);
  return path.join(dirs.cache, sha256);
};

/** fsync the file, rename it into place, fsync the directory: after this the file survives a power cut. */
export async function commitFile(part: string, target: string): Promise<void> {
  const fh = await fs.promises.open(part, 'r+');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fs.promises.rename(part, target);
  const dir = await fs.promises.open(path.dirname(target), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

export function writeJson(file: string, value: unknown): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(value));
  fs.renameSync(tmp, file);
}

export const readJson = <T>(file: string): T => JSON.parse(fs.readFileSync(file, 'utf8')) as T;

export function createFileActivities(deps: { cfg: Config }) {
  const dirs = centerDirs(deps.cfg);
  return {
    /** Removes a finished run's work directory (its /sync answer and plan). */
    async cleanupSyncRun({ runId }: { runId: string }): Promise<void> {
      await fs.promises.rm(runDir(dirs, runId), { recursive: true, force: true });
    },
  };
}
