// The cloud-sync RF download (activities/http/download.ts) against a local object server with strong ETags and
// Range: a transfer that goes silent is dropped after the stall bound and keeps its bytes; the next attempt asks
// only for the rest; a wrong body never reaches the target.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ChecksumMismatchError, downloadResumable } from '../../activities/http/download';
import { sha256, startObjectServer, type ObjectServer } from '../daemon/http-fixture';

let server: ObjectServer;
let dir: string;
const body = crypto.randomBytes(3 * 1024 * 1024);

beforeAll(async () => {
  server = await startObjectServer();
  server.put('rf.bin', body);
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rf-download-'));
});
afterAll(async () => {
  server.release();
  await server.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('a silent connection is dropped after the stall bound; the retry fetches only the missing bytes', async () => {
  const target = path.join(dir, 'rf.bin');
  const spec = { url: server.url('rf.bin'), sha256: sha256(body), size: body.length, target };
  const held = 1024 * 1024;
  server.holdAfter(held);
  const started = Date.now();
  await expect(downloadResumable(spec, 'token', () => undefined, { stallMs: 400 })).rejects.toThrow(/stalled for 400 ms/);
  expect(Date.now() - started).toBeLessThan(10_000);
  expect(fs.existsSync(target)).toBe(false);
  expect(fs.statSync(`${target}.part`).size).toBe(held);

  server.holdAfter(null);
  server.release();
  server.reset();
  const r = await downloadResumable(spec, 'token', () => undefined, { stallMs: 400 });
  expect(r).toEqual({ resumedFrom: held, fetched: body.length - held });
  expect(server.requests().map((q) => [q.range, q.status])).toEqual([[`bytes=${held}-`, 206]]);
  expect(sha256(fs.readFileSync(target))).toBe(sha256(body));
  expect(fs.readdirSync(dir)).toEqual(['rf.bin']);
});

test('a body that does not match its sha256 leaves neither the target nor a part to resume from', async () => {
  const target = path.join(dir, 'wrong.bin');
  const spec = { url: server.url('rf.bin'), sha256: sha256(Buffer.from('something else')), size: body.length, target };
  await expect(downloadResumable(spec, 'token', () => undefined)).rejects.toBeInstanceOf(ChecksumMismatchError);
  expect(fs.readdirSync(dir).filter((n) => n.startsWith('wrong.bin'))).toEqual([]);
});
