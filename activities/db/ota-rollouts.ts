// Read side of rollouts shared by the rollout activities and the API: per-wave counts of a rollout's jobs.
import crypto from 'node:crypto';
import type { OtaModels } from '../../common/models/ota';
import { isTerminal, type JobStatus } from '../../common/protocol';
import type { DispatchState, WaveCounts } from '../../workflows/ota-rollout-contract';
import { withDbTimeout } from './timeout';

/** Robot ids per ota_rollout_robots document (common/models/ota.ts): 10,000 robots are ten small reads. */
export const ROLLOUT_ROBOTS_PART = 1000;

/** The ota_rollout_robots documents that hold `robotIds` (in dispatch order) for rollout `rolloutId`. */
export function rolloutRobotParts(
  rolloutId: string,
  robotIds: readonly string[],
  size = ROLLOUT_ROBOTS_PART,
): Array<{ _id: string; rollout_id: string; part: number; robot_ids: string[] }> {
  const parts = [];
  for (let part = 0; part * size < robotIds.length; part++) {
    parts.push({ _id: `${rolloutId}:${part}`, rollout_id: rolloutId, part, robot_ids: robotIds.slice(part * size, (part + 1) * size) });
  }
  return parts;
}

/**
 * Rollout `rolloutId`'s robot ids from its `parts` documents, each read by its id alone (no scan on FerretDB),
 * side by side. A missing part is an error: the API writes them all before the rollout document.
 */
export async function loadRolloutRobots(model: OtaModels['OtaRolloutRobots'], rolloutId: string, parts: number, timeoutMs: number): Promise<string[]> {
  const docs = await Promise.all(
    Array.from({ length: parts }, (_, part) => withDbTimeout('load rollout robots', timeoutMs, model.findById(`${rolloutId}:${part}`).lean<{ robot_ids: string[] }>())),
  );
  return docs.flatMap((d, part) => {
    if (!d) throw new Error(`rollout ${rolloutId}: robot list part ${part} is missing`);
    return d.robot_ids;
  });
}

type CountRow = { _id: string; wave?: number | null; status: JobStatus; dispatch_state?: DispatchState | null; seq?: number | null };

/**
 * Per-wave counts of a rollout's jobs, from one read of their small fields (one scan on FerretDB; an aggregation
 * costs the same scan, and the dispatch cursor would need a second one) and one read of the rollout's result rows
 * (terminal statuses, activities/db/ota-rollout-results.ts). Jobs at or below the rollout's dispatch cursor still
 * 'queued' were dispatched (see `dispatch_cursor` in common/models/ota.ts).
 */
export async function rolloutCounts(
  models: Pick<OtaModels, 'OtaJob' | 'OtaRolloutResult'> & Partial<Pick<OtaModels, 'OtaJobArchive'>>,
  rolloutId: string,
  waveSizes: readonly number[],
  timeoutMs: number,
  dispatchCursor: number,
): Promise<WaveCounts[]> {
  const read = (model: OtaModels['OtaJob']) =>
    withDbTimeout(
      'rollout counts',
      timeoutMs,
      model.find({ deployment_id: rolloutId }, { _id: 1, wave: 1, status: 1, dispatch_state: 1, seq: 1 }).maxTimeMS(timeoutMs).lean<CountRow[]>(),
    );
  const results = withDbTimeout(
    'rollout result counts',
    timeoutMs,
    models.OtaRolloutResult.find({ deployment_id: rolloutId }, { _id: 1, status: 1 }).maxTimeMS(timeoutMs).lean<Array<{ _id: string; status: JobStatus }>>(),
  );
  // A finished rollout's jobs move to the archive (api/ota/archiver.ts), their results folded in; a running
  // rollout's are all live. A job caught in both for a moment while it moves could be counted twice then only.
  const [ended, ...lists] = await Promise.all([results, read(models.OtaJob), ...(models.OtaJobArchive ? [read(models.OtaJobArchive)] : [])]);
  const endOf = new Map(ended.map((r) => [r._id, r.status]));
  const rows = lists.flat().map((j) => ({ ...j, status: endOf.get(String(j._id)) ?? j.status }));
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

/**
 * The models rolloutCounts needs for a rollout in `status`. The archive holds a rollout's jobs only once the
 * rollout is finished (api/ota/archiver.ts); while it runs, that scan (the archive grows with every job ever
 * finished) is left out.
 */
export function countModelsFor<M extends Pick<OtaModels, 'OtaJob' | 'OtaRolloutResult'> & Partial<Pick<OtaModels, 'OtaJobArchive'>>>(
  status: string,
  models: M,
): Pick<OtaModels, 'OtaJob' | 'OtaRolloutResult'> & Partial<Pick<OtaModels, 'OtaJobArchive'>> {
  return status === 'RUNNING' || status === 'PAUSED' ? { OtaJob: models.OtaJob, OtaRolloutResult: models.OtaRolloutResult } : models;
}

/**
 * A rollout job's id: uuid-shaped like every job id, derived from (rollout, robot) so a retried creation is a
 * no-op, and so the bridge knows a report's rollout without reading the job (workers/bridge/running-rollouts.ts).
 */
export function rolloutJobId(rolloutId: string, robotId: string): string {
  const h = crypto.createHash('sha256').update(`${rolloutId}\0${robotId}`).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-${((parseInt(h[16], 16) & 3) | 8).toString(16)}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}
