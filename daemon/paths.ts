// Where a deploy may write. The reference daemon wrote wherever `deploy_path` pointed; here a path must be
// absolute, free of `..`, and land inside one of the configured roots after following every symlink that
// already exists on disk. The check touches nothing: a rejected path leaves the filesystem unchanged.
import fsp from 'node:fs/promises';
import path from 'node:path';
import { errnoCode } from './fs-util';

export class PathRejectedError extends Error {
  override name = 'PathRejectedError';
}

export interface ResolvedTarget {
  /** The file that will be replaced: symlink-free, inside an allowed root. */
  target: string;
  /** Its parent directory (may not exist yet; the installer creates it). */
  dir: string;
  /** The allowed root that contains it. */
  root: string;
}

/** Real paths of the configured roots; computed once at start, since the check compares real paths. */
export async function realRoots(roots: readonly string[]): Promise<string[]> {
  return Promise.all(roots.map((r) => fsp.realpath(r)));
}

/** True when `child` is `parent` itself or below it (both absolute and normalised). */
export function isWithin(parent: string, child: string): boolean {
  const rel = path.relative(parent, child);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/** Follows symlinks through the deepest ancestor that exists; the rest of the path is taken as written. */
async function realParent(dir: string, shown: string): Promise<string> {
  const missing: string[] = [];
  let probe = dir;
  for (;;) {
    try {
      const real = await fsp.realpath(probe);
      return path.join(real, ...missing);
    } catch (e) {
      const code = errnoCode(e);
      if (code === 'ENOTDIR') throw new PathRejectedError(`deploy_path ${shown} goes through a file that is not a directory`);
      if (code !== 'ENOENT') throw e;
      // ENOENT from realpath is also what a dangling symlink gives: creating directories through it would
      // write wherever it points later, so it is refused.
      const exists = await fsp.lstat(probe).then(() => true, () => false);
      if (exists) throw new PathRejectedError(`deploy_path ${shown} goes through a dangling symlink (${probe})`);
      missing.unshift(path.basename(probe));
      probe = path.dirname(probe);
    }
  }
}

/**
 * Validates `deployPath` against the real allowed roots. `forbidden` lists directories nothing may be
 * deployed into even inside a root (the daemon's own state directory).
 */
export async function resolveDeployPath(
  deployPath: string,
  roots: readonly string[],
  forbidden: readonly string[] = [],
): Promise<ResolvedTarget> {
  const shown = JSON.stringify(deployPath).slice(1, -1);
  if (deployPath.includes('\0')) throw new PathRejectedError(`deploy_path ${shown} contains a NUL byte`);
  if (!path.isAbsolute(deployPath)) throw new PathRejectedError(`deploy_path ${shown} must be an absolute path`);
  if (deployPath.split('/').includes('..')) throw new PathRejectedError(`deploy_path ${shown} must not contain '..'`);
  if (deployPath.endsWith('/')) throw new PathRejectedError(`deploy_path ${shown} must name a file, not a directory`);
  const normalised = path.normalize(deployPath);

  const outside = () => new PathRejectedError(`deploy_path ${shown} is outside the allowed roots`);
  const rootOf = (p: string, strict: boolean) =>
    roots.find((r) => isWithin(r, p) && !(strict && p === r) && !forbidden.some((f) => isWithin(f, p)));

  const dir = await realParent(path.dirname(normalised), shown);
  let target = path.join(dir, path.basename(normalised));
  let root = rootOf(dir, false);
  if (!root) throw outside();

  const stat = await fsp.lstat(target).catch((e: unknown) => {
    if (errnoCode(e) === 'ENOENT') return null;
    throw e;
  });
  if (stat?.isSymbolicLink()) {
    // Replacing the link itself would silently break whatever relies on it; writing through it is what a
    // user expects, as long as it ends inside a root.
    const resolved = await fsp.realpath(target).catch(() => {
      throw new PathRejectedError(`deploy_path ${shown} is a dangling symlink`);
    });
    root = rootOf(resolved, true);
    if (!root) throw outside();
    const real = await fsp.stat(resolved);
    if (!real.isFile()) throw new PathRejectedError(`deploy_path ${shown} does not point to a regular file`);
    target = resolved;
  } else if (stat?.isDirectory()) {
    throw new PathRejectedError(`deploy_path ${shown} is a directory`);
  } else if (stat && !stat.isFile()) {
    throw new PathRejectedError(`deploy_path ${shown} is not a regular file`);
  }
  if (rootOf(target, true) === undefined) throw outside();
  return { target, dir: path.dirname(target), root };
}

/**
 * Creates the target's missing parent directories, then re-checks that the directory still resolves to where
 * the check said, so a directory swapped for a symlink in between cannot redirect the write.
 */
export async function prepareTargetDir(t: ResolvedTarget): Promise<void> {
  await fsp.mkdir(t.dir, { recursive: true, mode: 0o755 });
  const real = await fsp.realpath(t.dir);
  if (real !== t.dir) throw new PathRejectedError(`deploy directory ${t.dir} changed while deploying (now ${real})`);
}
