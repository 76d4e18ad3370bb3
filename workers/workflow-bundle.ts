// Workflow code bundled in a short-lived child process. Bundling is webpack: done inside the worker it adds about
// 115 MB of RSS that the worker keeps for its whole life (measured: 142 → 257 MB, unchanged after a GC). A child
// process returns that memory when it exits; the worker then loads the finished bundle, as Temporal recommends for
// production (`workflowBundle`).
// Finished bundles are kept under the data dir, named by a hash of every source file and of the installed packages'
// lockfile: a worker restarted after a crash loads its bundle in milliseconds instead of webpacking for seconds, and a
// bundle can never be stale (any edit changes the name). The cache lives in the app's own data dir, not a shared /tmp,
// because whoever can write a bundle there runs code in the worker.
import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { bundleWorkflowCode } from '@temporalio/worker';

export interface WorkflowBundleResult {
  bundle: { code: string };
  /** True when an identical bundle was found in the cache and no bundling ran. */
  fromCache: boolean;
}

/** Folders that workflow code never imports: leaving them out keeps the hash cheap and the cache warm. */
const NOT_SOURCES = new Set(['node_modules', '.data', '.git', 'test', 'bench', 'ui', 'dist', 'coverage']);
const SOURCE_EXTENSIONS = /\.(ts|tsx|js|mjs|cjs|json)$/;

/** The package root above `from` (where package.json is). */
function packageRoot(from: string): string {
  for (let dir = path.dirname(from); ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'package.json'))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`no package.json above ${from}`);
  }
}

/** A hash of the entry point and every source file of the package (sorted by path), lockfile included. */
export function workflowSourcesHash(workflowsPath: string, cacheDir?: string): string {
  const skip = cacheDir ? path.resolve(cacheDir) : undefined;
  const root = packageRoot(workflowsPath);
  const hash = crypto.createHash('sha256').update(`${path.relative(root, workflowsPath)}\n`);
  const walk = (dir: string): void => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) {
        if (!NOT_SOURCES.has(entry.name) && full !== skip) walk(full);
      } else if (entry.isFile() && SOURCE_EXTENSIONS.test(entry.name)) {
        hash.update(`${path.relative(root, full)}\n`).update(fs.readFileSync(full)).update('\n');
      }
    }
  };
  walk(root);
  return hash.digest('hex');
}

/**
 * Returns the bundled workflow code, ready for `Worker.create({ workflowBundle })`: from `cacheDir` when the sources
 * are unchanged, otherwise bundled in a child process and then stored there (write + rename, so two workers starting
 * together never read half a bundle).
 */
export async function bundleWorkflowsInChild(workflowsPath: string, cacheDir?: string): Promise<WorkflowBundleResult> {
  const cached = cacheDir ? path.join(cacheDir, `${workflowSourcesHash(workflowsPath, cacheDir)}.js`) : undefined;
  if (cached && fs.existsSync(cached)) return { bundle: { code: fs.readFileSync(cached, 'utf8') }, fromCache: true };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleetsync-workflows-'));
  const out = path.join(dir, 'bundle.js');
  try {
    // The same node and loader flags as this process (tsx in development), so the child runs this very file; a
    // caller that compiles TypeScript another way (jest) gets tsx added.
    const tsLoader = __filename.endsWith('.ts') && !process.execArgv.some((a) => a.includes('tsx')) ? ['--import', 'tsx'] : [];
    const args = [...process.execArgv, ...tsLoader, __filename, workflowsPath, out];
    await promisify(execFile)(process.execPath, args, { maxBuffer: 16 * 1024 * 1024 });
    const code = fs.readFileSync(out, 'utf8');
    if (cached) storeInCache(cached, code);
    return { bundle: { code }, fromCache: false };
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr?.trim();
    throw new Error(`bundling the workflows of ${workflowsPath} failed${stderr ? `: ${stderr.slice(-2000)}` : ''}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function storeInCache(file: string, code: string): void {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, code, { mode: 0o600 });
  fs.renameSync(tmp, file);
  // Older bundles are of sources that no longer exist here; keep only the newest few.
  const others = fs.readdirSync(path.dirname(file)).filter((n) => n.endsWith('.js') && path.join(path.dirname(file), n) !== file);
  const byAge = others.map((n) => ({ n, t: fs.statSync(path.join(path.dirname(file), n)).mtimeMs })).sort((a, b) => b.t - a.t);
  for (const { n } of byAge.slice(4)) fs.rmSync(path.join(path.dirname(file), n), { force: true });
}

async function bundleToFile(workflowsPath: string, out: string): Promise<void> {
  const quiet = () => undefined;
  const toStderr = (message: string) => process.stderr.write(`${message}\n`);
  const { code } = await bundleWorkflowCode({
    workflowsPath,
    logger: { log: quiet, trace: quiet, debug: quiet, info: quiet, warn: toStderr, error: toStderr },
  });
  fs.writeFileSync(out, code);
}

if (require.main === module) {
  const [workflowsPath, out] = process.argv.slice(2);
  bundleToFile(workflowsPath, out).then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(1);
    },
  );
}
