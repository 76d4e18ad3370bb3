// Read side of rollouts shared by the rollout activities and the API: per-wave counts of a rollout's jobs.
import type { OtaModels } from '../../common/models/ota';
import { isTerminal, type JobStatus } from '../../common/protocol';
import type { DispatchState, WaveCounts } from '../../workflows/ota-rollout-contract';
import { withDbTimeout } from './timeout';

type CountRow = { _id: { w: number; s: JobStatus; d: DispatchState }; n: number };

/** Per-wave counts of a rollout's jobs, from one aggregation over its jobs (one scan on FerretDB). */
export async function rolloutCounts(
  models: Pick<OtaModels, 'OtaJob'> & Partial<Pick<OtaModels, 'OtaJobArchive'>>,
  rolloutId: string,
  waveSizes: readonly number[],
  timeoutMs: number,
): Promise<WaveCounts[]> {
  const count = (model: OtaModels['OtaJob']) =>
    withDbTimeout(
      'rollout counts',
      timeoutMs,
      model
        .aggregate<CountRow>([
          { $match: { deployment_id: rolloutId } },
          { $group: { _id: { w: '$wave', s: '$status', d: '$dispatch_state' }, n: { $sum: 1 } } },
        ])
        .option({ maxTimeMS: timeoutMs }),
    );
  // A finished rollout's jobs move to the archive (api/ota/archiver.ts); a running rollout's are all live. A job
  // caught in both for a moment while it moves could be counted twice in that moment only.
  const rows = (await Promise.all([count(models.OtaJob), ...(models.OtaJobArchive ? [count(models.OtaJobArchive)] : [])])).flat();
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
  return waves;
}

