// Two requests uploading the same caller-chosen s3_object_name at the same time: exactly one wins, the other
// fails with "already exists", and the stored bytes are the winner's (they used to be the loser's: both passed
// the existence check and the second PUT overwrote the first).
import { GetObjectCommand } from '@aws-sdk/client-s3';
import http from 'node:http';
import type { FileUploadResult } from '../../api/ota/schemas';
import { uploadLockId, uploadLockModel } from '../../api/ota/upload-locks';
import { fileInfoList, filePart, form, request, sha256, startHarness, uniqueName, type Harness } from './harness';

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h?.close();
});

async function objectText(key: string): Promise<string> {
  const out = await h.s3.send(new GetObjectCommand({ Bucket: 'files', Key: key }));
  return out.Body!.transformToString();
}

interface Slow {
  /** Sends the rest of the file and the closing boundary. */
  finish(): void;
  response: Promise<{ status: number; body: unknown }>;
}

/** An upload whose file part is sent in two halves: the request stays open between start and finish. */
function slowUpload(objectName: string, content: string): Slow {
  const boundary = `----ota-race-${Math.random().toString(16).slice(2)}`;
  const head = Buffer.from(
    `--${boundary}\r\nContent-Disposition: form-data; name="file_info_list"\r\n\r\n` +
      `${JSON.stringify({ file_list: [{ s3_object_name: objectName }] })}\r\n` +
      `--${boundary}\r\nContent-Disposition: form-data; name="files"; filename="race.txt"\r\nContent-Type: text/plain\r\n\r\n`,
  );
  const half = Math.floor(content.length / 2);
  const first = Buffer.from(content.slice(0, half));
  const rest = Buffer.from(`${content.slice(half)}\r\n--${boundary}--\r\n`);
  const url = new URL(`${h.base}/file/upload`);
  let resolveRes!: (v: { status: number; body: unknown }) => void;
  let rejectRes!: (e: unknown) => void;
  const response = new Promise<{ status: number; body: unknown }>((res, rej) => {
    resolveRes = res;
    rejectRes = rej;
  });
  const req = http.request(
    {
      host: url.hostname,
      port: url.port,
      path: url.pathname,
      method: 'POST',
      headers: { ...h.auth, 'content-type': `multipart/form-data; boundary=${boundary}`, 'content-length': String(head.length + first.length + rest.length) },
    },
    (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolveRes({ status: res.statusCode ?? 0, body: JSON.parse(text) as unknown }));
      res.on('error', rejectRes);
    },
  );
  req.on('error', rejectRes);
  req.write(Buffer.concat([head, first]));
  return { finish: () => req.end(rest), response };
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

it('lets exactly one of two concurrent uploads of the same object name win, keeping its bytes', async () => {
  const name = uniqueName('race');
  const contents = ['AAAA first request AAAA', 'BBBB second request BBBB'];
  const a = slowUpload(name, contents[0]);
  const b = slowUpload(name, contents[1]);
  // Both requests are past their file part's start (where the name is checked) before either finishes.
  await pause(500);
  a.finish();
  const ra = await a.response;
  b.finish();
  const rb = await b.response;

  const results = [ra, rb];
  expect(results.map((r) => r.status).sort()).toEqual([200, 400]);
  const w = results.findIndex((r) => r.status === 200);
  const winner = contents[w];
  expect((results[w].body as FileUploadResult[])[0]).toMatchObject({ s3_object_name: name, state: 'UPLOADED', sha256: sha256(winner) });
  expect(results[1 - w].body).toEqual({
    detail: [expect.objectContaining({ state: 'FAILED', error_msg: `Object ${name} in bucket files already exists.` })],
  });
  // The stored bytes are the ones the recorded row describes.
  expect(await objectText(name)).toBe(winner);
  const rows = await h.db.models.OtaFile.find({ s3_object_name: name }).lean();
  expect(rows).toEqual([expect.objectContaining({ sha256: sha256(winner), size: winner.length })]);
  // The name is released once recorded: nothing is left in the lock collection.
  expect(await uploadLockModel(h.db.connection).exists({ _id: uploadLockId('files', name) })).toBeNull();
});

it('also when the second request finishes first', async () => {
  const name = uniqueName('race2');
  const a = slowUpload(name, 'first in');
  await pause(300);
  const b = slowUpload(name, 'second in');
  await pause(300);
  b.finish();
  const rb = await b.response;
  a.finish();
  const ra = await a.response;
  expect([ra.status, rb.status]).toEqual([200, 400]);
  expect(await objectText(name)).toBe('first in');
  expect(await h.db.models.OtaFile.countDocuments({ s3_object_name: name })).toBe(1);
});

it('releases the name when the upload fails, so it can be used again', async () => {
  const name = uniqueName('retry');
  const failed = await request(h, 'POST', '/file/upload', {
    body: form([fileInfoList([{ s3_object_name: name }]), filePart('a'), filePart('b')]),
  });
  expect(failed.status).toBe(400);
  const ok = await request<FileUploadResult[]>(h, 'POST', '/file/upload', { body: form([fileInfoList([{ s3_object_name: name }]), filePart('again')]) });
  expect(ok.status).toBe(200);
  expect(await objectText(name)).toBe('again');
});

it('takes over a name whose holder died (lease expired) but not one still held', async () => {
  const Lock = uploadLockModel(h.db.connection);
  const stale = uniqueName('stale');
  const held = uniqueName('held');
  await Lock.create({ _id: uploadLockId('files', stale), bucket: 'files', key: stale, owner: 'dead', expires_at: new Date(Date.now() - 1000) });
  await Lock.create({ _id: uploadLockId('files', held), bucket: 'files', key: held, owner: 'alive', expires_at: new Date(Date.now() + 60_000) });
  try {
    const s = await request(h, 'POST', '/file/upload', { body: form([fileInfoList([{ s3_object_name: stale }]), filePart('mine now')]) });
    expect(s.status).toBe(200);
    const b = await request(h, 'POST', '/file/upload', { body: form([fileInfoList([{ s3_object_name: held }]), filePart('no')]) });
    expect(b).toMatchObject({ status: 400, body: { detail: [expect.objectContaining({ error_msg: `Object ${held} in bucket files already exists.` })] } });
    expect(await h.db.models.OtaFile.countDocuments({ s3_object_name: held })).toBe(0);
  } finally {
    await Lock.deleteMany({ _id: { $in: [uploadLockId('files', stale), uploadLockId('files', held)] } });
  }
});
