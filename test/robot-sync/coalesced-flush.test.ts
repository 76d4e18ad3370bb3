// coalescedFlush (activities/ssh/sftp-upload.ts), a unit test with a fake flush: a caller is only ever answered by
// a flush that started after it asked, callers arriving while one runs share the next, and a failure reaches
// the callers of that flush only.
import { coalescedFlush } from '../../activities/ssh/sftp-upload';

function fakeFlush() {
  const runs: Array<{ startedAt: number; finish: (err?: Error) => void }> = [];
  let clock = 0;
  const run = () =>
    new Promise<void>((resolve, reject) => runs.push({ startedAt: ++clock, finish: (err) => (err ? reject(err) : resolve()) }));
  return { runs, run, tick: () => ++clock };
}

const settled = () => new Promise((r) => setImmediate(r));

test('callers arriving during a flush share the next one, which starts after the running one ends', async () => {
  const f = fakeFlush();
  const flush = coalescedFlush(f.run);
  const done: string[] = [];
  const a = flush().then(() => done.push('a'));
  await settled();
  expect(f.runs).toHaveLength(1);
  const askedAt = f.tick();
  const b = flush().then(() => done.push('b'));
  const c = flush().then(() => done.push('c'));
  await settled();
  expect(f.runs).toHaveLength(1); // b and c do not start a second flush while the first runs
  f.runs[0].finish();
  await a;
  await settled();
  expect(done).toEqual(['a']); // the first flush may have started before b's and c's writes: not theirs
  expect(f.runs).toHaveLength(2);
  expect(f.runs[1].startedAt).toBeGreaterThan(askedAt);
  f.runs[1].finish();
  await Promise.all([b, c]);
  expect(done.sort()).toEqual(['a', 'b', 'c']);
  // Nothing running: the next caller starts its own.
  const d = flush();
  await settled();
  expect(f.runs).toHaveLength(3);
  f.runs[2].finish();
  await d;
});

test('a failed flush fails its callers; the callers queued behind it get their own flush', async () => {
  const f = fakeFlush();
  const flush = coalescedFlush(f.run);
  const a = flush();
  const b = flush();
  await settled();
  f.runs[0].finish(new Error('sync failed'));
  await expect(a).rejects.toThrow('sync failed');
  await settled();
  expect(f.runs).toHaveLength(2);
  f.runs[1].finish();
  await expect(b).resolves.toBeUndefined();
});
