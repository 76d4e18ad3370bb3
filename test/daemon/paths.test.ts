// Path safety: a deploy may only write inside the allowed roots, after following existing symlinks, and a
// rejected path leaves the filesystem exactly as it was.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createLogger } from '../../common/logger';
import { DeployError, runDeploy } from '../../daemon/deploy-job';
import { KeyedMutex } from '../../daemon/fs-util';
import { PathRejectedError, realRoots, resolveDeployPath } from '../../daemon/paths';

let tmp: string;
let root: string;
let outside: string;
let roots: string[];

/** Every path under `dir`, to prove a rejected deploy created nothing. */
function tree(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const name of fs.readdirSync(d)) {
      const p = path.join(d, name);
      out.push(path.relative(tmp, p));
      if (fs.lstatSync(p).isDirectory()) walk(p);
    }
  };
  walk(dir);
  return out.sort();
}

beforeEach(async () => {
  tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'ota-paths-')));
  root = path.join(tmp, 'root');
  outside = path.join(tmp, 'outside');
  fs.mkdirSync(root);
  fs.mkdirSync(outside);
  fs.mkdirSync(path.join(tmp, 'root-sibling'));
  roots = await realRoots([root]);
});
afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function rejected(deployPath: string, extraForbidden: string[] = []): Promise<string> {
  try {
    await resolveDeployPath(deployPath, roots, extraForbidden);
  } catch (e) {
    expect(e).toBeInstanceOf(PathRejectedError);
    return (e as Error).message;
  }
  throw new Error(`${deployPath} was accepted`);
}

describe('resolveDeployPath', () => {
  test('accepts a new file in missing directories inside a root, without creating them', async () => {
    const before = tree(tmp);
    const t = await resolveDeployPath(path.join(root, 'a/b/c.bin'), roots);
    expect(t).toEqual({ target: path.join(root, 'a/b/c.bin'), dir: path.join(root, 'a/b'), root });
    expect(tree(tmp)).toEqual(before);
  });

  test('rejects a relative path', async () => {
    expect(await rejected('root/x.bin')).toMatch(/must be an absolute path/);
  });

  test("rejects any '..' segment, even one that would stay inside the root", async () => {
    expect(await rejected(`${root}/a/../b.bin`)).toMatch(/must not contain '\.\.'/);
    expect(await rejected(`${root}/../outside/x.bin`)).toMatch(/must not contain '\.\.'/);
  });

  test('rejects paths outside the roots, including a sibling sharing the prefix and the root itself', async () => {
    expect(await rejected(path.join(outside, 'x.bin'))).toBe(`deploy_path ${path.join(outside, 'x.bin')} is outside the allowed roots`);
    expect(await rejected(path.join(tmp, 'root-sibling/x.bin'))).toMatch(/outside the allowed roots/);
    expect(await rejected('/etc/passwd')).toMatch(/outside the allowed roots/);
    expect(await rejected(root)).toMatch(/outside the allowed roots/);
    expect(await rejected(`${root}/`)).toMatch(/must name a file/);
  });

  test('rejects a directory symlink inside the root that points outside', async () => {
    fs.symlinkSync(outside, path.join(root, 'escape'));
    expect(await rejected(path.join(root, 'escape/new/dir/x.bin'))).toMatch(/outside the allowed roots/);
  });

  test('rejects a file symlink inside the root that points outside', async () => {
    fs.writeFileSync(path.join(outside, 'victim'), 'precious');
    fs.symlinkSync(path.join(outside, 'victim'), path.join(root, 'link.bin'));
    expect(await rejected(path.join(root, 'link.bin'))).toMatch(/outside the allowed roots/);
  });

  test('rejects dangling symlinks, which would redirect a write later', async () => {
    fs.symlinkSync(path.join(outside, 'not-yet'), path.join(root, 'dangling'));
    expect(await rejected(path.join(root, 'dangling'))).toMatch(/dangling symlink/);
    expect(await rejected(path.join(root, 'dangling/x.bin'))).toMatch(/dangling symlink/);
  });

  test('writes through a symlink that stays inside the root', async () => {
    fs.mkdirSync(path.join(root, 'v2'));
    fs.writeFileSync(path.join(root, 'v2/app.bin'), 'old');
    fs.symlinkSync(path.join(root, 'v2/app.bin'), path.join(root, 'current.bin'));
    const t = await resolveDeployPath(path.join(root, 'current.bin'), roots);
    expect(t.target).toBe(path.join(root, 'v2/app.bin'));
  });

  test('follows a symlinked root itself (roots are compared as real paths)', async () => {
    const alias = path.join(tmp, 'alias');
    fs.symlinkSync(root, alias);
    const viaAlias = await realRoots([alias]);
    const t = await resolveDeployPath(path.join(alias, 'x.bin'), viaAlias);
    expect(t.target).toBe(path.join(root, 'x.bin'));
  });

  test('rejects a directory as target, and anything inside a forbidden dir (the state dir)', async () => {
    fs.mkdirSync(path.join(root, 'dir'));
    expect(await rejected(path.join(root, 'dir'))).toMatch(/is a directory/);
    fs.mkdirSync(path.join(root, 'state'));
    expect(await rejected(path.join(root, 'state/journal.json'), [path.join(root, 'state')])).toMatch(/outside the allowed roots/);
  });
});

describe('a deploy to a forbidden path', () => {
  test('fails with the path message and writes nothing anywhere, without contacting the source', async () => {
    fs.symlinkSync(outside, path.join(root, 'escape'));
    const before = tree(tmp);
    const presign = jest.fn(async () => 'http://127.0.0.1:9/never');
    const message = {
      job_id: 'j-escape',
      s3_bucket: 'files',
      s3_object_name: 'x',
      deploy_path: path.join(root, 'escape/sub/x.bin'),
    };
    const run = runDeploy(
      { roots, forbidden: [], locks: new KeyedMutex(), log: createLogger('test', 'silent'), presign },
      { signal: new AbortController().signal, message: () => message, onDownloading: () => undefined },
    );
    await expect(run).rejects.toThrow(DeployError);
    await expect(run).rejects.toThrow(`deploy_path ${path.join(root, 'escape/sub/x.bin')} is outside the allowed roots`);
    expect(presign).not.toHaveBeenCalled();
    expect(tree(tmp)).toEqual(before);
  });
});
