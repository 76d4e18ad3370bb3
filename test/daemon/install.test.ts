// Installing: mode kept (or taken from the message), atomic replacement, and a failed verification that leaves
// the old file byte-for-byte untouched with no temporary file behind.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createLogger } from '../../common/logger';
import { DeployError, runDeploy, type DeployEnv } from '../../daemon/deploy-job';
import { partPaths } from '../../daemon/download';
import { KeyedMutex } from '../../daemon/fs-util';
import { installPart, InstallAbortedError } from '../../daemon/install';
import { realRoots } from '../../daemon/paths';
import type { DeployMessage } from '../../common/protocol';
import { sha256, startObjectServer, type ObjectServer } from './http-fixture';

let tmp: string;
let root: string;
let server: ObjectServer;
let env: DeployEnv;

beforeAll(async () => {
  server = await startObjectServer();
});
afterAll(() => server.close());
beforeEach(async () => {
  tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'ota-install-')));
  root = path.join(tmp, 'root');
  fs.mkdirSync(root);
  env = {
    roots: await realRoots([root]),
    forbidden: [],
    locks: new KeyedMutex(),
    log: createLogger('test', 'silent'),
    retry: { attempts: 2, baseDelayMs: 10, maxDelayMs: 10 },
  };
});
afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

const modeOf = (p: string) => fs.statSync(p).mode & 0o7777;

function deploy(message: DeployMessage) {
  return runDeploy(env, { signal: new AbortController().signal, message: () => message, onDownloading: () => undefined });
}

describe('installPart', () => {
  test('keeps the replaced file mode, and uses 0644 for a new file regardless of the umask', async () => {
    const target = path.join(root, 'tool');
    fs.writeFileSync(target, 'old');
    fs.chmodSync(target, 0o750);
    fs.writeFileSync(`${target}.part`, 'new', { mode: 0o600 });
    await installPart({ part: `${target}.part`, target });
    expect(fs.readFileSync(target, 'utf8')).toBe('new');
    expect(modeOf(target)).toBe(0o750);

    const fresh = path.join(root, 'fresh');
    fs.writeFileSync(`${fresh}.part`, 'x', { mode: 0o600 });
    await installPart({ part: `${fresh}.part`, target: fresh });
    expect(modeOf(fresh)).toBe(0o644);
  });

  test('an explicit mode wins over the old one', async () => {
    const target = path.join(root, 'script.sh');
    fs.writeFileSync(target, 'old', { mode: 0o644 });
    fs.writeFileSync(`${target}.part`, 'new');
    await installPart({ part: `${target}.part`, target, mode: 0o755 });
    expect(modeOf(target)).toBe(0o755);
  });

  test('a kept mode drops setuid/setgid (never installed implicitly either) but keeps the sticky bit', async () => {
    const target = path.join(root, 'helper');
    fs.writeFileSync(target, 'old');
    fs.chmodSync(target, 0o6755);
    expect(modeOf(target)).toBe(0o6755); // the replaced file really carries both bits
    fs.writeFileSync(`${target}.part`, 'new');
    expect(await installPart({ part: `${target}.part`, target })).toEqual({ mode: 0o755 });
    expect(fs.readFileSync(target, 'utf8')).toBe('new');
    expect(modeOf(target)).toBe(0o755);

    const sticky = path.join(root, 'sticky');
    fs.writeFileSync(sticky, 'old');
    fs.chmodSync(sticky, 0o1750);
    fs.writeFileSync(`${sticky}.part`, 'new');
    await installPart({ part: `${sticky}.part`, target: sticky });
    expect(modeOf(sticky)).toBe(0o1750);
  });

  test('a refused commit (cancel or stop) leaves the target untouched; an accepted one is called right before the rename', async () => {
    const target = path.join(root, 'keep');
    fs.writeFileSync(target, 'old');
    fs.writeFileSync(`${target}.part`, 'new');
    await expect(installPart({ part: `${target}.part`, target, commit: () => false })).rejects.toThrow(InstallAbortedError);
    expect(fs.readFileSync(target, 'utf8')).toBe('old');

    let seenAtCommit: string | null = null;
    await installPart({
      part: `${target}.part`,
      target,
      commit: () => {
        seenAtCommit = fs.readFileSync(target, 'utf8');
        return true;
      },
    });
    expect(seenAtCommit).toBe('old');
    expect(fs.readFileSync(target, 'utf8')).toBe('new');
  });
});

describe('runDeploy install step', () => {
  test('installs verified bytes atomically, keeps the mode and leaves no temporary file', async () => {
    const body = crypto.randomBytes(1 << 20);
    server.put('obj', body);
    const target = path.join(root, 'bin/app');
    fs.mkdirSync(path.dirname(target));
    fs.writeFileSync(target, 'old version');
    fs.chmodSync(target, 0o700);
    const out = await deploy({
      job_id: 'j1',
      s3_bucket: 'files',
      s3_object_name: 'obj',
      deploy_path: target,
      url: server.url('obj'),
      sha256: sha256(body),
      size: body.length,
    });
    expect(out).toMatchObject({ target, bytes: body.length, sha256: sha256(body), alreadyInstalled: false });
    expect(fs.readFileSync(target).equals(body)).toBe(true);
    expect(modeOf(target)).toBe(0o700);
    expect(fs.readdirSync(path.dirname(target))).toEqual(['app']);
  });

  test('a sha256 mismatch fails with both digests, leaves the old file untouched and removes the .part', async () => {
    const body = Buffer.from('tampered bytes');
    server.put('bad', body);
    const target = path.join(root, 'config.yaml');
    fs.writeFileSync(target, 'old: true\n', { mode: 0o640 });
    const expected = 'a'.repeat(64);
    const run = deploy({
      job_id: 'j2',
      s3_bucket: 'files',
      s3_object_name: 'bad',
      deploy_path: target,
      url: server.url('bad'),
      sha256: expected,
    });
    await expect(run).rejects.toThrow(DeployError);
    await expect(run).rejects.toThrow(`sha256 mismatch: expected ${expected}, got ${sha256(body)}`);
    expect(fs.readFileSync(target, 'utf8')).toBe('old: true\n');
    expect(modeOf(target)).toBe(0o640);
    expect(fs.readdirSync(root)).toEqual(['config.yaml']);
  });

  test('a size mismatch fails the same way', async () => {
    server.put('short', Buffer.from('12345'));
    const target = path.join(root, 'f');
    await expect(
      deploy({ job_id: 'j3', s3_bucket: 'files', s3_object_name: 'short', deploy_path: target, url: server.url('short'), size: 6 }),
    ).rejects.toThrow('size mismatch: expected 6 bytes, got 5');
    expect(fs.readdirSync(root)).toEqual([]);
  });

  test('identical bytes already in place are not downloaded again', async () => {
    const body = crypto.randomBytes(4096);
    server.put('same', body);
    const target = path.join(root, 'same.bin');
    fs.writeFileSync(target, body);
    server.reset();
    const out = await deploy({
      job_id: 'j4',
      s3_bucket: 'files',
      s3_object_name: 'same',
      deploy_path: target,
      url: server.url('same'),
      sha256: sha256(body),
      size: body.length,
      mode: 0o600,
    });
    expect(out.alreadyInstalled).toBe(true);
    expect(server.requests()).toEqual([]);
    expect(modeOf(target)).toBe(0o600);
  });

  test('a failed download leaves neither .part nor sidecar, and the error carries no URL', async () => {
    const target = path.join(root, 'gone.bin');
    const run = deploy({ job_id: 'j5', s3_bucket: 'files', s3_object_name: 'nope', deploy_path: target, url: server.url('nope') });
    await expect(run).rejects.toThrow('download failed: HTTP 404 Not Found');
    expect(fs.existsSync(partPaths(target).part)).toBe(false);
    expect(fs.existsSync(partPaths(target).sidecar)).toBe(false);
  });
});

test('a message mode with setuid/setgid bits is refused before anything is written', async () => {
  server.put('suid', Buffer.from('#!/bin/sh\n'));
  const target = path.join(root, 'suid.sh');
  await expect(
    deploy({ job_id: 'j6', s3_bucket: 'files', s3_object_name: 'suid', deploy_path: target, url: server.url('suid'), mode: 0o4755 }),
  ).rejects.toThrow('mode 4755 sets setuid/setgid bits, which the OTA daemon does not install');
  expect(fs.readdirSync(root)).toEqual([]);
});

test('only http(s) URLs are downloaded (fetch would happily read a data: URL)', async () => {
  const target = path.join(root, 'sub/data.txt');
  await expect(
    deploy({ job_id: 'j7', s3_bucket: 'files', s3_object_name: 'x', deploy_path: target, url: 'data:,hello' }),
  ).rejects.toThrow('unsupported url scheme data: (http or https only)');
  expect(fs.readdirSync(root)).toEqual([]);
});
