// Read side of rollouts shared by the rollout activities and the API: per-wave counts of a rollout's jobs.
import type { OtaModels } from '../../common/models/ota';
import { isTerminal, type JobStatus } from '../../common/protocol';
import type { DispatchState, WaveCounts } from '../../workflows/ota-rollout-contract';
import { withDbTimeout } from './timeout';

type CountRow = { wave?: number | null; status: JobStatus; dispatch_state?: DispatchState | null; seq?: number | null };

/**
 * Per-wave counts of a rollout's jobs, from one read of their small fields (one scan on FerretDB; an aggregation
 * costs the same scan, and the dispatch cursor would need a second one). Jobs at or below the rollout's dispatch
 * cursor still 'queued' were dispatched (see `dispatch_cursor` in common/models/ota.ts).
 */
export async function rolloutCounts(
  models: Pick<OtaModels, 'OtaJob'> & Partial<Pick<OtaModels, 'OtaJobArchive'>>,
  rolloutId: string,
  waveSizes: readonly number[],
  timeoutMs: number,
  dispatchCursor: number,
): Promise<WaveCounts[]> {
  const read = (model: OtaModels['OtaJob']) =>
    withDbTimeout(
      'rollout counts',
      timeoutMs,
      model.find({ deployment_id: rolloutId }, { _id: 0, wave: 1, status: 1, dispatch_state: 1, seq: 1 }).maxTimeMS(timeoutMs).lean<CountRow[]>(),
    );
  // A finished rollout's jobs move to the archive (api/ota/archiver.ts); a running rollout's are all live. A job
  // caught in both for a moment while it moves could be counted twice in that moment only.
  const rows = (await Promise.all([read(models.OtaJob), ...(models.OtaJobArchive ? [read(models.OtaJobArchive)] : [])])).flat();
  const waves: WaveCounts[] = waveSizes.map((size) => ({ size, status: {}, queued: 0, awaitingRobot: 0, inFlight: 0 }));
  for (const j of rows) {
    const w = waves[j.wave ?? -1];
    if (!w) continue;
    w.status[j.status] = (w.status[j.status] ?? 0) + 1;
    if (isTerminal(j.status)) continue;
    if (j.dispatch_state === 'queued' && (j.seq ?? Infinity) > dispatchCursor) w.queued++;
    else if (j.dispatch_state === 'awaiting_robot') w.awaitingRobot++;
    else w.inFlight++;
  }
  return waves;
}
