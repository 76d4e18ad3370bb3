// The rollout's counts moved by what an activity stored (movedCounts) instead of counted again: each job leaves
// the bucket it was in and lands in its new status or bucket; jobs of unknown waves are left out.
import { endedWhileQueued, movedCounts } from '../../activities/mqtt/ota-rollout';
import type { WaveCounts } from '../../workflows/ota-rollout-contract';

const wave = (size: number, w: Partial<WaveCounts>): WaveCounts => ({ size, status: { PENDING: size }, queued: 0, awaitingRobot: 0, inFlight: 0, ...w });

test('dispatched and ended jobs move between buckets and statuses; the counts given are not changed', () => {
  const prev = [wave(3, { inFlight: 2, awaitingRobot: 1 }), wave(4, { queued: 4 })];
  const cursor = 2; // seqs 0..2 were handed out (wave 0); wave 1 is seqs 3..6
  const moved = movedCounts(
    prev,
    [
      { job: { status: 'PENDING', wave: 0, seq: 0, dispatch_state: 'queued' }, to: 'COMPLETED' }, // in flight (behind the cursor)
      { job: { status: 'PENDING', wave: 0, seq: 2, dispatch_state: 'awaiting_robot' }, to: 'FAILED' },
      { job: { status: 'PENDING', wave: 1, seq: 3, dispatch_state: 'queued' }, to: 'inFlight' },
      { job: { status: 'PENDING', wave: 1, seq: 4, dispatch_state: 'queued' }, to: 'awaitingRobot' },
      { job: { status: 'PENDING', wave: 7, seq: 9, dispatch_state: 'queued' }, to: 'COMPLETED' }, // no such wave
    ],
    cursor,
  );
  expect(moved).toEqual([
    { size: 3, status: { PENDING: 1, COMPLETED: 1, FAILED: 1 }, queued: 0, awaitingRobot: 0, inFlight: 1 },
    { size: 4, status: { PENDING: 4 }, queued: 2, awaitingRobot: 1, inFlight: 1 },
  ]);
  expect(prev[0]).toEqual(wave(3, { inFlight: 2, awaitingRobot: 1 }));
});

test('the last job of a wave leaves no status key at zero', () => {
  const moved = movedCounts([wave(1, { inFlight: 1 })], [{ job: { status: 'PENDING', wave: 0, seq: 0, dispatch_state: 'queued' }, to: 'COMPLETED' }], 0);
  expect(moved).toEqual([{ size: 1, status: { COMPLETED: 1 }, queued: 0, awaitingRobot: 0, inFlight: 0 }]);
});

test('jobs ended while queued, from the counts: size minus the queued and the handed-out ones, waves up to the one asked', () => {
  // Waves of 3 and 4 (seqs 0..2, 3..6); the cursor at 4 handed out the first wave and two jobs of the second.
  const counts = [wave(3, { inFlight: 3, queued: 0 }), wave(4, { queued: 1, inFlight: 2, status: { PENDING: 3, CANCELED: 1 } })];
  expect(endedWhileQueued(counts, [3, 4], 4, 1)).toBe(1);
  expect(endedWhileQueued(counts, [3, 4], 4, 0)).toBe(0);
  expect(endedWhileQueued([wave(3, { queued: 3 }), wave(4, { queued: 4 })], [3, 4], -1, 1)).toBe(0);
});
