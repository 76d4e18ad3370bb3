// The OTA API only touches the buckets it is given (deps.otaBuckets, default ['files']): an authenticated caller
// cannot write into, read from or delete in another bucket of the store, such as cloud-sync's robot-files.
import { DeleteObjectCommand, GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { fileInfoList, filePart, form, listKeys, request, sha256, startHarness, uniqueName, type Harness } from './harness';

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h?.close();
});

const OTHER = 'robot-files';
const ALLOWED_DETAIL = /^s3_bucket: not an OTA bucket \(allowed: files\)$/;

describe('a bucket outside otaBuckets', () => {
  it.each(['/file/upload', '/file/deploy'])('%s answers 400 naming s3_bucket and writes nothing there', async (path) => {
    const name = uniqueName('other-bucket');
    const rows = await h.db.models.OtaFile.countDocuments({});
    const jobs = await h.db.models.OtaJob.countDocuments({});
    for (const item of [
      { s3_bucket: OTHER, robot_id: 'robot01', deploy_path: '/tmp/x' },
      { s3_bucket: OTHER, s3_object_name: name, robot_id: 'robot01', deploy_path: '/tmp/x' },
    ]) {
      const r = await request<{ detail: string }>(h, 'POST', path, { body: form([fileInfoList([item]), filePart('evil', name)]) });
      expect(r.status).toBe(400);
      expect(r.body.detail).toBe(`file_info_list.file_list.0.s3_bucket: not an OTA bucket (allowed: files)`);
    }
    expect(await listKeys(h.s3, OTHER, name)).toEqual(new Set());
    expect(await h.db.models.OtaFile.countDocuments({})).toBe(rows);
    expect(await h.db.models.OtaJob.countDocuments({})).toBe(jobs);
  });

  it('PATCH /file/update answers 400 naming s3_bucket and does not overwrite the object', async () => {
    const key = uniqueName('patch-other');
    await h.s3.send(new PutObjectCommand({ Bucket: OTHER, Key: key, Body: 'cloud-sync data' }));
    try {
      // Even with a catalogue row pointing there (e.g. written before the allow-list existed).
      await h.db.models.OtaFile.create({ s3_bucket: OTHER, s3_object_name: key, file_name: 'f', timestamp: new Date(), sha256: sha256('cloud-sync data'), size: 15 });
      const r = await request<{ detail: string }>(h, 'PATCH', '/file/update', {
        body: form([{ name: 'file_info', value: JSON.stringify({ s3_bucket: OTHER, s3_object_name: key }) }, { name: 'file', value: Buffer.from('evil'), filename: 'e' }]),
      });
      expect(r).toMatchObject({ status: 400, body: { detail: 'file_info.s3_bucket: not an OTA bucket (allowed: files)' } });
      const del = await request<{ detail: string }>(h, 'DELETE', `/file/delete?s3_bucket=${OTHER}&s3_object_name=${encodeURIComponent(key)}`);
      expect(del.status).toBe(400);
      expect(del.body.detail).toMatch(ALLOWED_DETAIL);
      const got = await h.s3.send(new GetObjectCommand({ Bucket: OTHER, Key: key }));
      expect(await got.Body!.transformToString()).toBe('cloud-sync data');
    } finally {
      await h.db.models.OtaFile.deleteOne({ s3_bucket: OTHER, s3_object_name: key });
      await h.s3.send(new DeleteObjectCommand({ Bucket: OTHER, Key: key }));
    }
  });

  it.each([
    ['GET', '/file/download'],
    ['PUT', '/file/validate'],
    ['PUT', '/file/invalidate'],
    ['DELETE', '/file/delete'],
    ['GET', '/file/list'],
    ['POST', '/file/deploy_from_s3'],
  ])('%s %s answers 400 naming s3_bucket', async (method, path) => {
    const q = new URLSearchParams({ s3_bucket: OTHER, s3_object_name: 'x.txt', robot_id: 'robot01', deploy_path: '/tmp/x' });
    const r = await request<{ detail: string }>(h, method, `${path}?${q.toString()}`);
    expect(r.status).toBe(400);
    expect(r.body.detail).toMatch(ALLOWED_DETAIL);
  });

  it('the default bucket still works everywhere', async () => {
    const up = await request<{ s3_object_name: string }[]>(h, 'POST', '/file/upload', { body: form([fileInfoList([{}]), filePart('ok')]) });
    expect(up.status).toBe(200);
    const q = `s3_bucket=files&s3_object_name=${encodeURIComponent(up.body[0].s3_object_name)}`;
    expect((await request(h, 'GET', `/file/download?${q}`)).status).toBe(200);
    expect((await request(h, 'GET', '/file/list?s3_bucket=files')).status).toBe(200);
    expect((await request(h, 'PUT', `/file/validate?${q}`)).status).toBe(200);
  });
});

describe('otaBuckets from the deps', () => {
  let only: Harness;
  beforeAll(async () => {
    only = await startHarness({ otaBuckets: ['ota-elsewhere'] });
  });
  afterAll(async () => {
    await only?.close();
  });

  it('is the list the API checks against (here without files, the default bucket)', async () => {
    const r = await request<{ detail: string }>(only, 'POST', '/file/upload', { body: form([fileInfoList([{}]), filePart('x')]) });
    expect(r).toMatchObject({ status: 400, body: { detail: 'file_info_list.file_list.0.s3_bucket: not an OTA bucket (allowed: ota-elsewhere)' } });
    const d = await request<{ detail: string }>(only, 'GET', '/file/download?s3_object_name=x');
    expect(d).toMatchObject({ status: 400, body: { detail: 's3_bucket: not an OTA bucket (allowed: ota-elsewhere)' } });
  });
});
