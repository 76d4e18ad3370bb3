// Deploy lookups that arrive together go out together (api/ota/read-coalescing.ts): one database read for many
// requests, each request still gets its own answer, and a failed HEAD fails only the requests for that object.
import { S3ServiceException, type S3Client } from '@aws-sdk/client-s3';
import { createDeployLookups } from '../../api/ota/read-coalescing';
import type { OtaContext } from '../../api/ota/types';

function fakeContext(heads: (key: string) => Promise<unknown>) {
  const reads = { robots: 0, files: 0 };
  const robots = [
    { _id: 'r1', deploy_roots: ['/data/r1'], mqtt_username: 'r1' },
    { _id: 'r2', deploy_roots: ['/data/r2'], mqtt_username: 'r2' },
    { _id: 'unprovisioned', deploy_roots: [], mqtt_username: null },
  ];
  const files = [{ s3_bucket: 'files', s3_object_name: 'a.bin', sha256: 'aa' }];
  const ctx = {
    models: {
      Robot: { find: (q: { _id: { $in: string[] } }) => ({ lean: async () => (reads.robots++, robots.filter((r) => q._id.$in.includes(r._id))) }) },
      OtaFile: {
        find: (q: { $or: Array<{ s3_bucket: string; s3_object_name: string }> }) => ({
          lean: async () => (reads.files++, files.filter((f) => q.$or.some((k) => k.s3_bucket === f.s3_bucket && k.s3_object_name === f.s3_object_name))),
        }),
      },
    },
    s3: { send: (cmd: { input: { Key: string } }) => heads(cmd.input.Key) } as unknown as S3Client,
  } as unknown as Pick<OtaContext, 'models' | 's3'>;
  return { ctx, reads };
}

test('concurrent lookups share one read each, and every caller gets its own answer', async () => {
  const { ctx, reads } = fakeContext(async () => ({}));
  const lookups = createDeployLookups(ctx);
  const [p1, p2, outside, missing, unprovisioned, fileA, fileB, fileA2] = await Promise.all([
    lookups.rootProblem('r1', '/data/r1/x.bin'),
    lookups.rootProblem('r2', '/data/r2/y.bin'),
    lookups.rootProblem('r1', '/data/r2/y.bin'),
    lookups.rootProblem('nobody', '/data/x'),
    lookups.rootProblem('unprovisioned', '/data/x'),
    lookups.file('files', 'a.bin'),
    lookups.file('files', 'b.bin'),
    lookups.file('files', 'a.bin'),
  ]);
  expect([p1, p2]).toEqual([null, null]);
  expect(outside).toMatch(/^deploy_path: .* outside robot r1/);
  expect(missing).toMatch(/^robot_id: robot nobody is not provisioned/);
  expect(unprovisioned).toMatch(/^robot_id: robot unprovisioned is not provisioned/);
  expect(fileA).toMatchObject({ sha256: 'aa' });
  expect(fileA2).toMatchObject({ sha256: 'aa' });
  expect(fileB).toBeNull();
  expect(reads).toEqual({ robots: 1, files: 1 });
  // Nothing is kept: a later lookup reads again.
  await lookups.rootProblem('r1', '/data/r1/x.bin');
  expect(reads.robots).toBe(2);
});

test('one HEAD per distinct object; a failing HEAD fails only its own callers', async () => {
  const asked: string[] = [];
  const { ctx } = fakeContext(async (key) => {
    asked.push(key);
    if (key === 'broken.bin') throw Object.assign(new Error('storage down'), { $metadata: { httpStatusCode: 503 } });
    if (key === 'gone.bin') throw new S3ServiceException({ name: 'NotFound', $fault: 'client', $metadata: { httpStatusCode: 404 } });
    return {};
  });
  const lookups = createDeployLookups(ctx);
  const results = await Promise.allSettled([
    lookups.objectExists('files', 'a.bin'),
    lookups.objectExists('files', 'a.bin'),
    lookups.objectExists('files', 'gone.bin'),
    lookups.objectExists('files', 'broken.bin'),
  ]);
  expect(asked.sort()).toEqual(['a.bin', 'broken.bin', 'gone.bin']);
  expect(results.slice(0, 3)).toEqual([
    { status: 'fulfilled', value: true },
    { status: 'fulfilled', value: true },
    { status: 'fulfilled', value: false },
  ]);
  expect(results[3].status).toBe('rejected');
});
