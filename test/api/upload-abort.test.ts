// A client that disconnects in the middle of a multi-file upload leaves nothing behind: the finished file's
// object is deleted, the unfinished multipart upload aborted, and no row is written.
import { ListMultipartUploadsCommand } from '@aws-sdk/client-s3';
import http from 'node:http';
import { eventually } from '../helpers';
import { listKeys, startHarness, uniqueName, type Harness } from './harness';

let h: Harness;
beforeAll(async () => {
  h = await startHarness({ options: { partSizeBytes: 5 * 1024 * 1024 } });
});
afterAll(async () => {
  await h?.close();
});

it('rolls back when the client goes away mid-request', async () => {
  const first = uniqueName('first');
  const second = uniqueName('second');
  const boundary = '----ota-abort-test';
  const part = (headers: string, body: string | Buffer) => Buffer.concat([Buffer.from(`--${boundary}\r\n${headers}\r\n\r\n`), Buffer.from(body), Buffer.from('\r\n')]);
  const head = Buffer.concat([
    part('Content-Disposition: form-data; name="file_info_list"', JSON.stringify({ file_list: [{}, {}] })),
    part(`Content-Disposition: form-data; name="files"; filename="${first}"\r\nContent-Type: text/plain`, 'complete first file'),
    Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="files"; filename="${second}"\r\nContent-Type: application/octet-stream\r\n\r\n`),
  ]);
  const url = new URL(`${h.base}/file/upload`);
  const req = http.request({
    host: url.hostname,
    port: url.port,
    path: url.pathname,
    method: 'POST',
    headers: { ...h.auth, 'content-type': `multipart/form-data; boundary=${boundary}`, 'content-length': String(head.length + 50 * 1024 * 1024) },
  });
  req.on('error', () => undefined);
  req.write(head);
  // 7 MiB of the second file: more than one 5 MiB part, so a multipart upload is in progress when we vanish.
  req.write(Buffer.alloc(7 * 1024 * 1024, 1));
  // Wait until the first file is stored, then disconnect.
  await eventually('first object stored', async () => (await listKeys(h.s3, 'files', first)).size === 1);
  req.destroy();

  await eventually('rollback', async () => (await listKeys(h.s3, 'files', first)).size === 0);
  expect(await listKeys(h.s3, 'files', second)).toEqual(new Set());
  expect(await h.db.models.OtaFile.countDocuments({})).toBe(0);
  await eventually('multipart upload of the second file aborted', async () => {
    const mpu = await h.s3.send(new ListMultipartUploadsCommand({ Bucket: 'files', Prefix: second }));
    return (mpu.Uploads ?? []).length === 0;
  });
});
