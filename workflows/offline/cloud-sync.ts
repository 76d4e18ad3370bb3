// cloudSync: the center's "Synchronize" button, on the center's own Temporal (one run per center at a time:
// the workflow id is fixed per center, a second click joins the running one).
//
// Sequence (DESIGN.md, seed 000): first sync of a new install? inventory the connected robots → collect changed
// upstream data and POST /sync → outdated app? stop with "outdated_app", apply nothing → apply downstream data to
// the local DB → download missing static images → compute missing RFs (perfect state − inventories − cache) →
// download them (batched, resumable, sha256-verified) → record the sync cursor.
//
// Deterministic: no I/O here; activities are imported as types only. The center's JWT never passes through
// here (activities read it from configuration), and large data stays in the run's files and the database:
// the history holds ids and counts.
import { ActivityFailure, ApplicationFailure, defineQuery, proxyActivities, setHandler, workflowInfo, type RetryPolicy } from '@temporalio/workflow';
import type { CloudSyncDbActivities, ApplyResult, RfPlan } from '../../activities/db/cloud-sync';
import type { BatchResult, CloudSyncHttpActivities, ExchangeResult } from '../../activities/http/cloud-sync';
import type { createFileActivities } from '../../activities/files/rf-cache';
import type { RobotInventoryActivities, InventoryResult } from '../../activities/ssh/inventory';

export interface CloudSyncInput {
  centerId: string;
}

export type CloudSyncOutcome = 'synced' | 'outdated_app' | 'auth_failed';

export interface CloudSyncResult {
  outcome: CloudSyncOutcome;
  message: string | null;
  inventoried: { robotId: string; files: number | null; error: string | null }[];
  exchange: ExchangeResult | null;
  applied: Record<string, ApplyResult> | null;
  images: BatchResult | null;
  rfs: (RfPlan & BatchResult) | null;
}

export interface CloudSyncProgress {
  step: 'inventory' | 'exchange' | 'apply' | 'images' | 'plan' | 'download' | 'cursor' | 'done';
  rfs: { batches: number; batchesDone: number; missing: number; downloaded: number; bytes: number; bytesTotal: number };
}

export const cloudSyncProgressQuery = defineQuery<CloudSyncProgress>('cloudSyncProgress');

export const cloudSyncWorkflowId = (centerId: string): string => `cloud-sync-${centerId}`;

/** Download batches in flight at once. */
const PARALLEL_BATCHES = 2;

const retry: RetryPolicy = { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '30s' };
const nonRetryableErrorTypes = ['CenterAuthFailed', 'SyncRejected', 'DownloadRefused'];

const inventory = proxyActivities<RobotInventoryActivities>({
  startToCloseTimeout: '30m',
  heartbeatTimeout: '2m',
  retry: { ...retry, maximumAttempts: 3 },
});
const http = proxyActivities<CloudSyncHttpActivities>({
  startToCloseTimeout: '2h',
  // A dead worker is noticed quickly and the download resumes on another attempt.
  heartbeatTimeout: '10s',
  // No attempt limit: an unreachable cloud is retried with backoff until it answers (the run can be canceled).
  retry: { ...retry, nonRetryableErrorTypes },
});
const exchange = proxyActivities<Pick<CloudSyncHttpActivities, 'exchangeWithCloud'>>({
  startToCloseTimeout: '15m',
  retry: { ...retry, nonRetryableErrorTypes },
});
const db = proxyActivities<CloudSyncDbActivities & ReturnType<typeof createFileActivities>>({
  startToCloseTimeout: '15m',
  retry: { ...retry, maximumAttempts: 10 },
});

/** The activity failed for a reason of this type (non-retryable failures travel as the activity's cause). */
const failureOfType = (e: unknown, type: string): ApplicationFailure | null =>
  e instanceof ActivityFailure && e.cause instanceof ApplicationFailure && e.cause.type === type ? e.cause : null;

export async function cloudSync(_input: CloudSyncInput): Promise<CloudSyncResult> {
  const { runId } = workflowInfo();
  const progress: CloudSyncProgress = { step: 'inventory', rfs: { batches: 0, batchesDone: 0, missing: 0, downloaded: 0, bytes: 0, bytesTotal: 0 } };
  setHandler(cloudSyncProgressQuery, () => progress);
  const result: CloudSyncResult = { outcome: 'synced', message: null, inventoried: [], exchange: null, applied: null, images: null, rfs: null };

  // A new install has no inventory: without one the diff would download what the robots already hold.
  const fresh = await db.robotsWithoutInventory();
  result.inventoried = await Promise.all(
    fresh.map((robotId) =>
      inventory.inventoryRobot({ robotId }).then(
        (r: InventoryResult) => ({ robotId, files: r.files, error: null }),
        (e: unknown) => ({ robotId, files: null, error: e instanceof Error ? (e.cause instanceof Error ? e.cause.message : e.message) : String(e) }),
      ),
    ),
  );

  progress.step = 'exchange';
  try {
    result.exchange = await exchange.exchangeWithCloud({ runId });
  } catch (e) {
    const auth = failureOfType(e, 'CenterAuthFailed');
    if (!auth) throw e;
    return { ...result, outcome: 'auth_failed', message: auth.message };
  }
  if (!result.exchange.compatible) {
    await db.cleanupSyncRun({ runId });
    return { ...result, outcome: 'outdated_app', message: result.exchange.message ?? 'the offline app is outdated: update it' };
  }

  progress.step = 'apply';
  result.applied = await db.applyDownstream({ runId });

  progress.step = 'images';
  result.images = await http.downloadImages({ runId });

  progress.step = 'plan';
  const plan = await db.planMissingRfs({ runId });
  Object.assign(progress.rfs, { batches: plan.batches, missing: plan.missing, bytesTotal: plan.bytes });

  progress.step = 'download';
  const rfs: RfPlan & BatchResult = { ...plan, downloaded: 0, bytes: 0, fetched: 0, resumed: 0, failed: [] };
  let next = 0;
  const lane = async () => {
    while (next < plan.batches) {
      const r = await http.downloadRfBatch({ runId, batch: next++ });
      rfs.downloaded += r.downloaded;
      rfs.bytes += r.bytes;
      rfs.fetched += r.fetched;
      rfs.resumed += r.resumed;
      rfs.failed.push(...r.failed);
      progress.rfs.batchesDone++;
      Object.assign(progress.rfs, { downloaded: rfs.downloaded, bytes: rfs.bytes });
    }
  };
  await Promise.all(Array.from({ length: Math.min(PARALLEL_BATCHES, plan.batches) }, lane));
  result.rfs = rfs;
  if (rfs.failed.length) result.message = `${rfs.failed.length} RF(s) failed verification after retries: ${rfs.failed.map((f) => f.sha256.slice(0, 12)).join(', ')}`;

  progress.step = 'cursor';
  await db.recordSyncCursor({
    cursor: result.exchange.cursor,
    summary: { run_id: runId, images: result.images.downloaded, rfs: rfs.downloaded, rf_bytes: rfs.bytes, rf_failed: rfs.failed.length },
  });
  await db.cleanupSyncRun({ runId });
  progress.step = 'done';
  return result;
}
