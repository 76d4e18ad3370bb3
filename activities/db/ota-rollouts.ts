// Read side of rollouts shared by the rollout activities and the API: per-wave counts of a rollout's jobs.
import type { OtaModels } from '../../common/models/ota';
import { isTerminal, type JobStatus } from '../../common/protocol';
import type { DispatchState, WaveCounts } from '../../workflows/ota-rollout-contract';
import { withDbTimeout } from './timeout';

type CountRow = { _id: { w: number; s: JobStatus; d: DispatchState }; n: number };

/**
 * Per-wave counts of a rollout's jobs, from one aggregation over its jobs (one scan on FerretDB), plus one more
 * once a batch went out: jobs at or below the rollout's dispatch cursor still 'queued' were dispatched (see
 * `dispatch_cursor` in common/models/ota.ts).
 */
export async function rolloutCounts(
  models: Pick<OtaModels, 'OtaJob'>,
  rolloutId: string,
  waveSizes: readonly number[],
  timeoutMs: number,
  dispatchCursor: number,
): Promise<WaveCounts[]> {
  const group = (match: Record<string, unknown>) =>
    withDbTimeout(
      'rollout counts',
      timeoutMs,
      models.OtaJob.aggregate<CountRow>([
        { $match: { deployment_id: rolloutId, ...match } },
        { $group: { _id: { w: '$wave', s: '$status', d: '$dispatch_state' }, n: { $sum: 1 } } },
      ]).option({ maxTimeMS: timeoutMs }),
    );
  const [rows, sent] = await Promise.all([group({}), dispatchCursor >= 0 ? group({ dispatch_state: 'queued', seq: { $lte: dispatchCursor } }) : []]);
  const waves: WaveCounts[] = waveSizes.map((size) => ({ size, status: {}, queued: 0, awaitingRobot: 0, inFlight: 0 }));
  for (const { _id, n } of rows) {
    const w = waves[_id.w];
    if (!w) continue;
    w.status[_id.s] = (w.status[_id.s] ?? 0) + n;
    if (isTerminal(_id.s)) continue;
    if (_id.d === 'queued') w.queued += n;
    else if (_id.d === 'awaiting_robot') w.awaitingRobot += n;
    else w.inFlight += n;
  }
  for (const { _id, n } of sent) {
    const w = waves[_id.w];
    if (!w || isTerminal(_id.s)) continue;
    w.queued -= n;
    w.inFlight += n;
  }
  return waves;
}
