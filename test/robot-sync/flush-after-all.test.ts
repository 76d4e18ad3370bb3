// flushAfterAll (activities/ssh/sftp-upload.ts), a unit test with a fake flush: the one flush starts only once
// every upload session has arrived or left, answers every session that arrived, and a failure reaches them all.
import { flushAfterAll } from '../../activities/ssh/sftp-upload';

function fakeFlush() {
  const runs: Array<{ finish: (err?: Error) => void }> = [];
  const run = () => new Promise<void>((resolve, reject) => runs.push({ finish: (err) => (err ? reject(err) : resolve()) }));
  return { runs, run };
}

const settled = () => new Promise((r) => setImmediate(r));

test('the flush starts once every session has arrived or left, runs once and answers every session that arrived', async () => {
  const f = fakeFlush();
  const [a, b, c] = flushAfterAll(3, f.run);
  const done: string[] = [];
  const pa = a.flush().then(() => done.push('a'));
  await settled();
  expect(f.runs).toHaveLength(0); // b and c are still writing: their parts would not be covered
  const pb = b.flush().then(() => done.push('b'));
  await settled();
  expect(f.runs).toHaveLength(0);
  c.leave(); // c wrote nothing (or failed): nobody waits for it
  c.leave(); // idempotent
  await settled();
  expect(f.runs).toHaveLength(1);
  expect(done).toEqual([]);
  f.runs[0].finish();
  await Promise.all([pa, pb]);
  expect(done.sort()).toEqual(['a', 'b']);
  // A party leaving after it arrived changes nothing (uploadFiles' finally).
  a.leave();
  expect(f.runs).toHaveLength(1);
});

test('a failed flush fails every session that waited for it', async () => {
  const f = fakeFlush();
  const parties = flushAfterAll(2, f.run);
  const results = parties.map((p) => p.flush().then(() => 'ok', (e: Error) => e.message));
  await settled();
  expect(f.runs).toHaveLength(1);
  f.runs[0].finish(new Error('sync on the robot failed'));
  expect(await Promise.all(results)).toEqual(['sync on the robot failed', 'sync on the robot failed']);
});
