// keepAlive (activities/ssh/robot-session.ts) in a mock activity context: progress calls come per file, so it makes
// at most one heartbeat call per 250 ms, yet the newest details always follow, and the 2 s beat goes on.
import { MockActivityEnvironment } from '@temporalio/testing';
import { keepAlive } from '../../activities/ssh/robot-session';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('a burst of progress makes one heartbeat call at once and one with the newest details within 250 ms', async () => {
  const env = new MockActivityEnvironment({ heartbeatDetails: { resume: 'previous attempt' } });
  const beats: unknown[] = [];
  env.on('heartbeat', (d: unknown) => beats.push(d));
  await env.run(async () => {
    const beat = keepAlive();
    try {
      for (let i = 1; i <= 5000; i++) beat.set({ files: i });
      expect(beats).toEqual([{ files: 1 }]);
      await sleep(400);
      expect(beats).toEqual([{ files: 1 }, { files: 5000 }]);
      // Nothing new: the 2 s beat repeats the newest details.
      await sleep(2100);
      expect(beats.length).toBeGreaterThanOrEqual(3);
      expect(beats.at(-1)).toEqual({ files: 5000 });
    } finally {
      beat.stop();
    }
  });
  const after = beats.length;
  await sleep(2200);
  expect(beats.length).toBe(after); // stopped: no call after stop()
});

test('until the attempt reports its own progress, the 2 s beat sends the previous attempt\'s details', async () => {
  const env = new MockActivityEnvironment({ heartbeatDetails: { resume: { offset: 42 } } });
  const beats: unknown[] = [];
  env.on('heartbeat', (d: unknown) => beats.push(d));
  await env.run(async () => {
    const beat = keepAlive();
    await sleep(2200);
    beat.stop();
  });
  expect(beats).toEqual([{ resume: { offset: 42 } }]);
});
