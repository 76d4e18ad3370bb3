// File endpoints against the real stack: bytes land in S3 unchanged, rows carry sha256/size, failures leave
// nothing behind, downloads stream with Range, metadata-only and content PATCH, delete, validate/invalidate.
import { DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import type { FileRow, FileUploadResult } from '../../api/ota/schemas';
import { fileInfoList, filePart, form, listKeys, request, sha256, startHarness, uniqueName, type Harness } from './harness';

let h: Harness;
beforeAll(async () => {
  // 5 MiB parts (the S3 minimum) so a 12 MiB file goes through the multipart path. A bucket the store does not
  // have is allowed, so the rollback of a failure in S3 can be provoked.
  h = await startHarness({ options: { partSizeBytes: 5 * 1024 * 1024 }, otaBuckets: ['files', 'no-such-bucket-here'] });
});
afterAll(async () => {
  await h?.close();
});

async function objectBytes(bucket: string, key: string): Promise<Buffer> {
  const out = await h.s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return Buffer.from(await out.Body!.transformToByteArray());
}

async function upload(items: object[], files: { content: string | Buffer; name?: string }[]) {
  return request<FileUploadResult[]>(h, 'POST', '/file/upload', {
    body: form([fileInfoList(items), ...files.map((f) => filePart(f.content, f.name))]),
  });
}

async function rowCount(): Promise<number> {
  return h.db.models.OtaFile.countDocuments({});
}

describe('POST /file/upload', () => {
  it('stores the bytes unchanged and records sha256 and size', async () => {
    const content = 'hello world\n';
    const r = await upload([{ s3_bucket: 'files', robot_id: 'robot01', file_metadata: { type: 'test' } }], [{ content }]);
    expect(r.status).toBe(200);
    expect(r.body).toHaveLength(1);
    const item = r.body[0];
    expect(item).toMatchObject({
      s3_bucket: 'files',
      robot_id: 'robot01',
      deploy_path: '',
      filename: 'test.txt',
      state: 'UPLOADED',
      error_msg: null,
      sha256: sha256(content),
      size: Buffer.byteLength(content),
    });
    expect(item.s3_object_name).toMatch(/^test\.txt_[0-9a-f-]{36}$/);
    expect((await objectBytes('files', item.s3_object_name)).toString()).toBe(content);
    const row = await h.db.models.OtaFile.findOne({ s3_object_name: item.s3_object_name }).lean();
    expect(row).toMatchObject({ sha256: sha256(content), size: 12, file_name: 'test.txt', valid: true, version: 'v1', file_metadata: { type: 'test' } });
  });

  it('streams a large file through a multipart upload and hashes it exactly', async () => {
    const big = Buffer.alloc(12 * 1024 * 1024 + 123);
    for (let i = 0; i < big.length; i += 4096) big.writeUInt32LE(i, i);
    const r = await upload([{}], [{ content: big, name: 'big.bin' }]);
    expect({ status: r.status, body: r.status === 200 ? null : r.body }).toEqual({ status: 200, body: null });
    expect(r.body[0]).toMatchObject({ sha256: sha256(big), size: big.length, s3_bucket: 'files' });
    const head = await h.s3.send(new HeadObjectCommand({ Bucket: 'files', Key: r.body[0].s3_object_name }));
    expect(head.ContentLength).toBe(big.length);
    expect(head.ETag).toMatch(/-\d+"?$/); // a multipart ETag: "<md5>-<parts>"
    expect(sha256(await objectBytes('files', r.body[0].s3_object_name))).toBe(sha256(big));
  });

  it('keeps only the base name of a client filename (no "/" in the key)', async () => {
    const r = await upload([{}], [{ content: 'x', name: '../../etc/evil.txt' }]);
    expect(r.status).toBe(200);
    expect(r.body[0].filename).toBe('evil.txt');
    expect(r.body[0].s3_object_name).toMatch(/^evil\.txt_[0-9a-f-]{36}$/);
  });

  it('stores an empty file', async () => {
    const r = await upload([{}], [{ content: '', name: 'empty.txt' }]);
    expect(r.status).toBe(200);
    expect(r.body[0]).toMatchObject({ size: 0, sha256: sha256('') });
  });

  it('uses a caller-chosen object name and refuses it the second time, storing nothing', async () => {
    const name = `chosen-${Date.now()}.txt`;
    const first = await upload([{ s3_object_name: name }], [{ content: 'one' }]);
    expect(first.status).toBe(200);
    expect(first.body[0].s3_object_name).toBe(name);
    const rows = await rowCount();
    const second = await upload([{}, { s3_object_name: name }], [{ content: 'new' }, { content: 'two' }]);
    expect(second.status).toBe(400);
    expect(second.body).toEqual({ detail: [
      expect.objectContaining({ state: 'FAILED', error_msg: 'Not stored: another file of this request failed.' }),
      expect.objectContaining({ state: 'FAILED', error_msg: `Object ${name} in bucket files already exists.` }),
    ] });
    expect(await rowCount()).toBe(rows);
    expect((await objectBytes('files', name)).toString()).toBe('one');
  });

  it('answers 400 on a count mismatch and leaves nothing in S3 or the database', async () => {
    const name = uniqueName('mismatch');
    const rows = await rowCount();
    const more = await upload([{}], [{ content: 'a', name }, { content: 'b', name }]);
    expect(more).toMatchObject({ status: 400, body: { detail: 'Number of files and file info do not match.' } });
    const fewer = await upload([{}, {}, {}], [{ content: 'a', name }, { content: 'b', name }]);
    expect(fewer).toMatchObject({ status: 400, body: { detail: 'Number of files and file info do not match.' } });
    expect(await listKeys(h.s3, 'files', name)).toEqual(new Set());
    expect(await rowCount()).toBe(rows);
  });

  it('rolls back the files already stored when a later one fails in S3 (no such bucket)', async () => {
    const name = uniqueName('rollback');
    const rows = await rowCount();
    const r = await upload([{ s3_bucket: 'files' }, { s3_bucket: 'no-such-bucket-here' }], [{ content: 'a', name }, { content: 'b', name }]);
    expect(r.status).toBe(400);
    expect(r.body).toEqual({ detail: [
      expect.objectContaining({ state: 'FAILED' }),
      expect.objectContaining({ state: 'FAILED', error_msg: 'Bucket no-such-bucket-here does not exist.' }),
    ] });
    expect(await listKeys(h.s3, 'files', name)).toEqual(new Set());
    expect(await rowCount()).toBe(rows);
  });

  it('requires file_info_list before the files (400 naming the field)', async () => {
    const r = await request(h, 'POST', '/file/upload', { body: form([filePart('a'), fileInfoList([{}])]) });
    expect(r).toMatchObject({ status: 400, body: { detail: 'file_info_list: must be sent before the "files" file parts' } });
  });

  it.each([
    ['invalid JSON', '{"file_list": [', /^file_info_list: invalid JSON/],
    ['a non-string metadata value', JSON.stringify({ file_list: [{ file_metadata: { n: 1 } }] }), /^file_info_list\.file_list\.0\.file_metadata\.n: /],
    ['a missing file_list', JSON.stringify({}), /^file_info_list\.file_list: /],
  ])('answers 422 naming the field for %s', async (_what, raw, detail) => {
    const r = await request<{ detail: string }>(h, 'POST', '/file/upload', {
      body: form([{ name: 'file_info_list', value: raw }, filePart('a')]),
    });
    expect(r.status).toBe(422);
    expect(r.body.detail).toMatch(detail);
  });

  it('answers 400 for a relative deploy_path and a bad object name', async () => {
    const a = await upload([{ deploy_path: 'relative/path' }], [{ content: 'a' }]);
    expect(a).toMatchObject({ status: 400, body: { detail: 'file_info_list.file_list.0.deploy_path: must be an absolute path' } });
    const b = await upload([{ s3_object_name: '../escape' }], [{ content: 'a' }]);
    expect(b.status).toBe(400);
  });

  it('answers 422 without file_info_list and 415 for a non-multipart body', async () => {
    expect((await request(h, 'POST', '/file/upload', { body: form([filePart('x')]) })).status).toBe(400);
    expect((await request(h, 'POST', '/file/upload', { body: form([{ name: 'other', value: 'x' }]) })).status).toBe(422);
    const json = await request(h, 'POST', '/file/upload', { body: '{}', headers: { 'content-type': 'application/json' } });
    expect(json.status).toBe(415);
  });
});

describe('GET /file/list', () => {
  const tag = `list-${Date.now()}`;
  beforeAll(async () => {
    const r = await upload(
      [
        { robot_id: 'lr1', robot_type: 'carter', deploy_path: '/tmp/a.txt', file_metadata: { tag, type: 'image' } },
        { robot_id: 'lr2', robot_type: 'carter', deploy_path: '/tmp/b.txt', file_metadata: { tag, type: 'map' } },
        { robot_id: 'lr2', robot_type: 'nova', deploy_path: '/tmp/a.txt', file_metadata: { tag, type: 'image' } },
      ],
      [{ content: '1', name: 'one.txt' }, { content: '2', name: 'two.txt' }, { content: '3', name: 'three.txt' }],
    );
    expect(r.status).toBe(200);
  });

  const names = async (query: string) => {
    const r = await request<FileRow[]>(h, 'GET', `/file/list?${query}`);
    expect(r.status).toBe(200);
    return r.body.map((f) => f.file_name).sort();
  };

  it('filters by each field, ANDed', async () => {
    const meta = (o: object) => `file_metadata=${encodeURIComponent(JSON.stringify({ tag, ...o }))}`;
    expect(await names(meta({}))).toEqual(['one.txt', 'three.txt', 'two.txt']);
    expect(await names(`robot_id=lr2&${meta({})}`)).toEqual(['three.txt', 'two.txt']);
    expect(await names(`robot_type=carter&${meta({})}`)).toEqual(['one.txt', 'two.txt']);
    expect(await names(`deploy_path=${encodeURIComponent('/tmp/a.txt')}&${meta({})}`)).toEqual(['one.txt', 'three.txt']);
    expect(await names(meta({ type: 'image' }))).toEqual(['one.txt', 'three.txt']);
    expect(await names(`robot_id=lr2&${meta({ type: 'image' })}`)).toEqual(['three.txt']);
    expect(await names(`s3_bucket=files&${meta({ type: 'map' })}`)).toEqual(['two.txt']);
    const one = (await request<FileRow[]>(h, 'GET', `/file/list?robot_id=lr1`)).body[0];
    expect(await names(`s3_object_name=${encodeURIComponent(one.s3_object_name)}`)).toEqual(['one.txt']);
    expect(await names('robot_id=nobody-has-this')).toEqual([]);
  });

  it('returns reference fields, newest first', async () => {
    const r = await request<FileRow[]>(h, 'GET', '/file/list');
    const stamps = r.body.map((f) => Date.parse(f.timestamp));
    expect([...stamps].sort((a, b) => b - a)).toEqual(stamps);
    expect(Object.keys(r.body[0]).sort()).toEqual(
      ['deploy_path', 'file_metadata', 'file_name', 'robot_id', 'robot_type', 'robot_version', 's3_bucket', 's3_object_name', 'sha256', 'size', 'timestamp', 'valid', 'version'].sort(),
    );
  });

  it.each(['not json', '[1,2]', '{"type": 1}', '{"a.b": "x"}', '{"$where": "x"}'])('answers 400 for file_metadata=%s', async (raw) => {
    const r = await request<{ detail: string }>(h, 'GET', `/file/list?file_metadata=${encodeURIComponent(raw)}`);
    expect(r.status).toBe(400);
    expect(r.body.detail).toMatch(/^file_metadata/);
  });
});

describe('GET /file/download', () => {
  let key: string;
  const content = '0123456789abcdefghij';
  beforeAll(async () => {
    key = (await upload([{}], [{ content, name: 'dl name.txt' }])).body[0].s3_object_name;
  });

  it('streams the bytes as an attachment named after the stored file name', async () => {
    const res = await fetch(`${h.base}/file/download?s3_object_name=${encodeURIComponent(key)}&s3_bucket=files`, { headers: h.auth });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/octet-stream');
    expect(res.headers.get('content-disposition')).toBe('attachment; filename="dl name.txt"');
    expect(res.headers.get('accept-ranges')).toBe('bytes');
    expect(await res.text()).toBe(content);
  });

  it('passes Range through (206 with Content-Range), default bucket "files"', async () => {
    const res = await fetch(`${h.base}/file/download?s3_object_name=${encodeURIComponent(key)}`, { headers: { ...h.auth, range: 'bytes=5-9' } });
    expect(res.status).toBe(206);
    expect(res.headers.get('content-range')).toBe(`bytes 5-9/${content.length}`);
    expect(await res.text()).toBe('56789');
    const suffix = await fetch(`${h.base}/file/download?s3_object_name=${encodeURIComponent(key)}`, { headers: { ...h.auth, range: 'bytes=-3' } });
    expect(suffix.status).toBe(206);
    expect(await suffix.text()).toBe('hij');
  });

  it('answers 416 for a range past the end and 404 for an unknown file', async () => {
    const res = await fetch(`${h.base}/file/download?s3_object_name=${encodeURIComponent(key)}`, { headers: { ...h.auth, range: 'bytes=100-200' } });
    expect(res.status).toBe(416);
    expect(res.headers.get('content-range')).toBe(`bytes */${content.length}`);
    const missing = await request(h, 'GET', '/file/download?s3_object_name=nope');
    expect(missing).toMatchObject({ status: 404, body: { detail: 'File not found' } });
    expect((await request(h, 'GET', '/file/download')).status).toBe(422);
  });
});

describe('PATCH /file/update', () => {
  let key: string;
  beforeEach(async () => {
    key = (await upload([{ robot_id: 'before', file_metadata: { a: '1' } }], [{ content: 'old content' }])).body[0].s3_object_name;
  });

  const patch = (info: object, file?: { content: string; name: string }) =>
    request<FileRow>(h, 'PATCH', '/file/update', {
      body: form([{ name: 'file_info', value: JSON.stringify(info) }, ...(file ? [{ name: 'file', value: Buffer.from(file.content), filename: file.name }] : [])]),
    });

  it('updates attributes without a file (metadata-only PATCH) and leaves the object alone', async () => {
    const r = await patch({ s3_bucket: 'files', s3_object_name: key, robot_id: 'robot02', file_metadata: { b: '2' } });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ s3_object_name: key, robot_id: 'robot02', file_metadata: { b: '2' }, sha256: sha256('old content'), size: 11 });
    expect((await objectBytes('files', key)).toString()).toBe('old content');
  });

  it('replaces the content in place and records the new sha256, size and file name', async () => {
    const r = await patch({ s3_object_name: key }, { content: 'brand new bytes', name: 'v2.txt' });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ s3_object_name: key, file_name: 'v2.txt', sha256: sha256('brand new bytes'), size: 15, robot_id: 'before' });
    expect((await objectBytes('files', key)).toString()).toBe('brand new bytes');
  });

  it('answers 400 for an unknown file (with or without content) and writes nothing', async () => {
    const missing = uniqueName('does-not-exist');
    expect(await patch({ s3_object_name: missing })).toMatchObject({ status: 400, body: { detail: 'The file does not exist.' } });
    expect(await patch({ s3_object_name: missing }, { content: 'x', name: 'x' })).toMatchObject({ status: 400 });
    expect(await listKeys(h.s3, 'files', missing)).toEqual(new Set());
  });

  it('answers 422 when s3_object_name is missing', async () => {
    const r = await patch({ robot_id: 'x' });
    expect(r.status).toBe(422);
    expect(JSON.stringify(r.body)).toContain('file_info.s3_object_name');
  });
});

describe('DELETE /file/delete, PUT /file/validate|invalidate', () => {
  it('deletes the object and the row; a second delete is 404', async () => {
    const key = (await upload([{}], [{ content: 'bye' }])).body[0].s3_object_name;
    const r = await request(h, 'DELETE', `/file/delete?s3_bucket=files&s3_object_name=${encodeURIComponent(key)}`);
    expect(r).toMatchObject({ status: 200, body: null });
    expect(await listKeys(h.s3, 'files', key)).toEqual(new Set());
    expect(await h.db.models.OtaFile.exists({ s3_object_name: key })).toBeNull();
    expect((await request(h, 'DELETE', `/file/delete?s3_bucket=files&s3_object_name=${encodeURIComponent(key)}`)).status).toBe(404);
  });

  it('toggles valid and answers 404 for an unknown file', async () => {
    const key = (await upload([{}], [{ content: 'v' }])).body[0].s3_object_name;
    const q = `s3_bucket=files&s3_object_name=${encodeURIComponent(key)}`;
    expect((await request<FileRow>(h, 'PUT', `/file/invalidate?${q}`)).body.valid).toBe(false);
    expect((await h.db.models.OtaFile.findOne({ s3_object_name: key }).lean())?.valid).toBe(false);
    expect((await request<FileRow>(h, 'PUT', `/file/validate?${q}`)).body.valid).toBe(true);
    expect((await request(h, 'PUT', '/file/validate?s3_bucket=files&s3_object_name=nope')).status).toBe(404);
  });
});

describe('authentication, health and docs', () => {
  it('refuses every OTA route without a valid token', async () => {
    for (const [method, path] of [
      ['GET', '/file/list'],
      ['POST', '/file/upload'],
      ['GET', '/job_state/x'],
      ['GET', '/jobs'],
      ['DELETE', '/file/delete?s3_object_name=x'],
    ]) {
      const r = await request(h, method, path, { auth: false });
      expect({ path, status: r.status, body: r.body }).toEqual({ path, status: 401, body: { detail: 'Not authenticated' } });
    }
    const bad = await request(h, 'GET', '/file/list', { auth: false, headers: { authorization: 'Bearer abc.def.ghi' } });
    expect(bad.status).toBe(401);
  });

  it('reports health without a token', async () => {
    const r = await request(h, 'GET', '/health', { auth: false });
    expect(r).toEqual({
      status: 200,
      headers: expect.anything(),
      body: { status: 'OTA File Service: Running', dependencies: { mongo: 'ok', s3: 'ok', temporal: 'ok' } },
    });
  });

  it('serves the OpenAPI document and Swagger UI without a token', async () => {
    const doc = await request<{ openapi: string; paths: Record<string, unknown> }>(h, 'GET', '/openapi.json', { auth: false });
    expect(doc.status).toBe(200);
    expect(Object.keys(doc.body.paths)).toEqual(
      expect.arrayContaining(['/file/upload', '/file/list', '/file/deploy', '/file/deploy_from_s3', '/file/download', '/file/update', '/file/delete', '/file/validate', '/file/invalidate', '/job_state/{job_id}', '/deploy_state/{robot_id}', '/jobs', '/job/{job_id}/cancel', '/health']),
    );
    const ui = await fetch(`${h.base}/docs/`);
    expect(ui.status).toBe(200);
    expect(await ui.text()).toContain('swagger-ui');
  });

  it('answers JSON 404 for an unknown route', async () => {
    expect(await request(h, 'GET', '/nope')).toMatchObject({ status: 404, body: { detail: 'Not Found' } });
  });
});

describe('when S3 fails', () => {
  let broken: Harness;
  const key = `s3-fails-${Date.now()}.txt`;
  beforeAll(async () => {
    // Same store, wrong secret: every S3 call of this app is refused (SignatureDoesNotMatch).
    broken = await startHarness({ s3: { secretAccessKey: 'definitely-not-the-secret' } });
    await h.s3.send(new PutObjectCommand({ Bucket: 'files', Key: key, Body: 'original' }));
    await broken.db.models.OtaFile.create({
      s3_bucket: 'files',
      s3_object_name: key,
      file_name: 'f.txt',
      timestamp: new Date('2026-01-01T00:00:00Z'),
      sha256: sha256('original'),
      size: 8,
    });
  });
  afterAll(async () => {
    await broken?.close();
    await h.s3.send(new DeleteObjectCommand({ Bucket: 'files', Key: key }));
  });

  it('a PATCH with new content answers 502 and changes nothing', async () => {
    const r = await request(broken, 'PATCH', '/file/update', {
      body: form([{ name: 'file_info', value: JSON.stringify({ s3_object_name: key, robot_id: 'changed' }) }, { name: 'file', value: Buffer.from('new'), filename: 'n.txt' }]),
    });
    expect(r.status).toBe(502);
    const row = await broken.db.models.OtaFile.findOne({ s3_object_name: key }).lean();
    expect(row).toMatchObject({ robot_id: '', sha256: sha256('original'), file_name: 'f.txt' });
    expect((await objectBytes('files', key)).toString()).toBe('original');
  });

  it('a delete answers 502 and keeps the row', async () => {
    const r = await request(broken, 'DELETE', `/file/delete?s3_bucket=files&s3_object_name=${encodeURIComponent(key)}`);
    expect(r).toMatchObject({ status: 502, body: { detail: 'Could not delete the object from storage; the file record is kept.' } });
    expect(await broken.db.models.OtaFile.exists({ s3_object_name: key })).not.toBeNull();
  });

  it('an upload answers 502 and records nothing', async () => {
    const r = await request(broken, 'POST', '/file/upload', { body: form([fileInfoList([{}]), filePart('x')]) });
    expect(r.status).toBe(502);
    expect(await broken.db.models.OtaFile.countDocuments({})).toBe(1);
  });

  it('health reports s3 as down with 503', async () => {
    const r = await request<{ dependencies: Record<string, string> }>(broken, 'GET', '/health', { auth: false });
    expect(r.status).toBe(503);
    expect(r.body.dependencies).toEqual({ mongo: 'ok', s3: expect.stringMatching(/^error: /), temporal: 'ok' });
  });
});
