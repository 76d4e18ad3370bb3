// Resumable download against a local HTTP server that behaves like S3 (strong ETag, Range, If-Range) and
// counts the body bytes it sends, so "resumed" means "fetched only the rest".
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DownloadError, downloadToPart, parseContentRange, partPaths, type PartIdentity } from '../../daemon/download';
import { sha256, startObjectServer, type ObjectServer } from './http-fixture';

let server: ObjectServer;
let tmp: string;
const MiB = 1 << 20;
const identity: PartIdentity = { bucket: 'files', object: 'blob', sha256: null };

beforeAll(async () => {
  server = await startObjectServer();
});
afterAll(() => server.close());
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ota-dl-'));
  server.reset();
  server.cutAfter(null);
  server.ignoreRanges(false);
});
afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

const signal = () => new AbortController().signal;

async function interruptedAt(target: string, url: string, bytes: number): Promise<void> {
  server.cutAfter(bytes);
  await expect(downloadToPart({ url, target, identity, signal: signal() })).rejects.toThrow(DownloadError);
  server.cutAfter(null);
}

describe('downloadToPart', () => {
  test('fetches into <target>.part with a sidecar and reports progress up to the total', async () => {
    const body = crypto.randomBytes(3 * MiB + 123);
    server.put('blob', body);
    const target = path.join(tmp, 'file.bin');
    const seen: number[] = [];
    const r = await downloadToPart({ url: server.url('blob'), target, identity, signal: signal(), onProgress: (n) => seen.push(n) });
    expect(r).toEqual({ bytes: body.length, sha256: sha256(body), resumedFrom: 0, fetched: body.length });
    expect(fs.readFileSync(partPaths(target).part).equals(body)).toBe(true);
    expect(JSON.parse(fs.readFileSync(partPaths(target).sidecar, 'utf8'))).toMatchObject({ etag: expect.any(String), total: body.length });
    expect(seen.at(-1)).toBe(body.length);
    expect(server.requests()[0]).toMatchObject({ range: undefined, status: 200 });
  });

  test('after an interruption, resumes with Range + If-Range and fetches only the remaining bytes', async () => {
    const body = crypto.randomBytes(4 * MiB);
    const obj = server.put('blob', body);
    const target = path.join(tmp, 'file.bin');
    await interruptedAt(target, server.url('blob'), 1.5 * MiB);
    const onDisk = fs.statSync(partPaths(target).part).size;
    expect(onDisk).toBeGreaterThan(0);
    server.reset();

    const r = await downloadToPart({ url: server.url('blob'), target, identity, signal: signal() });
    expect(r.resumedFrom).toBe(onDisk);
    expect(r.fetched).toBe(body.length - onDisk);
    expect(server.bytesSent()).toBe(body.length - onDisk);
    expect(server.requests()[0]).toMatchObject({ range: `bytes=${onDisk}-`, ifRange: obj.etag, status: 206 });
    expect(r.sha256).toBe(sha256(body));
    expect(fs.readFileSync(partPaths(target).part).equals(body)).toBe(true);
  });

  test('restarts from zero when the object changed since the partial download (If-Range → 200)', async () => {
    const target = path.join(tmp, 'file.bin');
    server.put('blob', crypto.randomBytes(2 * MiB));
    await interruptedAt(target, server.url('blob'), MiB);
    const v2 = crypto.randomBytes(2 * MiB + 7);
    server.put('blob', v2);
    server.reset();
    const r = await downloadToPart({ url: server.url('blob'), target, identity, signal: signal() });
    expect(server.requests()[0].status).toBe(200);
    expect(r).toMatchObject({ resumedFrom: 0, bytes: v2.length, sha256: sha256(v2) });
    expect(fs.readFileSync(partPaths(target).part).equals(v2)).toBe(true);
  });

  test('a server that ignores ranges gets a clean restart, not a spliced file', async () => {
    const body = crypto.randomBytes(2 * MiB);
    server.put('blob', body);
    const target = path.join(tmp, 'file.bin');
    await interruptedAt(target, server.url('blob'), MiB / 2);
    server.ignoreRanges(true);
    const r = await downloadToPart({ url: server.url('blob'), target, identity, signal: signal() });
    expect(r).toMatchObject({ resumedFrom: 0, sha256: sha256(body) });
  });

  test('416 for a part that is already complete finishes without a body', async () => {
    const body = crypto.randomBytes(MiB);
    server.put('blob', body);
    const target = path.join(tmp, 'file.bin');
    await downloadToPart({ url: server.url('blob'), target, identity, signal: signal() });
    server.reset();
    const r = await downloadToPart({ url: server.url('blob'), target, identity, signal: signal() });
    expect(server.requests()[0].status).toBe(416);
    expect(server.bytesSent()).toBe(0);
    expect(r).toEqual({ bytes: body.length, sha256: sha256(body), resumedFrom: body.length, fetched: 0 });
  });

  test('a partial download of another object or content is not continued', async () => {
    const target = path.join(tmp, 'file.bin');
    server.put('blob', crypto.randomBytes(2 * MiB));
    await interruptedAt(target, server.url('blob'), MiB);
    server.reset();
    await downloadToPart({ url: server.url('blob'), target, identity: { ...identity, object: 'other' }, signal: signal() });
    expect(server.requests()[0].range).toBeUndefined();
  });

  test('never resumes on a weak ETag', async () => {
    const body = crypto.randomBytes(2 * MiB);
    server.put('blob', body, 'W/"weak"');
    const target = path.join(tmp, 'file.bin');
    await interruptedAt(target, server.url('blob'), MiB);
    server.reset();
    const r = await downloadToPart({ url: server.url('blob'), target, identity, signal: signal() });
    expect(server.requests()[0].range).toBeUndefined();
    expect(r.resumedFrom).toBe(0);
  });

  test('an empty object downloads as an empty file', async () => {
    server.put('empty', Buffer.alloc(0));
    const target = path.join(tmp, 'empty.bin');
    const r = await downloadToPart({ url: server.url('empty'), target, identity, signal: signal() });
    expect(r).toMatchObject({ bytes: 0, sha256: sha256(Buffer.alloc(0)) });
    expect(fs.statSync(partPaths(target).part).size).toBe(0);
  });

  test('HTTP errors are DownloadErrors without the URL; 404 is not worth retrying', async () => {
    const target = path.join(tmp, 'file.bin');
    const err = await downloadToPart({ url: server.url('missing'), target, identity, signal: signal() }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DownloadError);
    expect((err as DownloadError).retryable).toBe(false);
    expect((err as Error).message).toBe('download failed: HTTP 404 Not Found');
  });

  test('a bandwidth cap slows the transfer down to about that rate', async () => {
    const body = crypto.randomBytes(2 * MiB);
    server.put('blob', body);
    const started = Date.now();
    const r = await downloadToPart({ url: server.url('blob'), target: path.join(tmp, 'slow.bin'), identity, signal: signal(), maxBytesPerSecond: 4 * MiB });
    expect(r.sha256).toBe(sha256(body));
    expect(Date.now() - started).toBeGreaterThanOrEqual(400);
  });

  test('an abort stops the transfer and keeps the partial bytes for a later resume', async () => {
    const body = crypto.randomBytes(8 * MiB);
    server.put('blob', body);
    const target = path.join(tmp, 'file.bin');
    const controller = new AbortController();
    const reason = new Error('stop');
    const run = downloadToPart({
      url: server.url('blob'),
      target,
      identity,
      signal: controller.signal,
      onProgress: (n) => n >= 2 * MiB && controller.abort(reason),
    });
    await expect(run).rejects.toBe(reason);
    expect(fs.statSync(partPaths(target).part).size).toBeGreaterThanOrEqual(2 * MiB);
  });
});

test('parseContentRange reads both forms', () => {
  expect(parseContentRange('bytes 100-199/1000')).toEqual({ start: 100, total: 1000 });
  expect(parseContentRange('bytes */1000')).toEqual({ start: null, total: 1000 });
  expect(parseContentRange('bytes 0-9/*')).toEqual({ start: 0, total: null });
  expect(parseContentRange('nonsense')).toBeNull();
});
