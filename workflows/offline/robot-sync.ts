// Robot sync ("Update Robots"): every connected robot of the center gets a child workflow, at most
// `concurrency` at a time. Per robot: take the inventory (hashing only what changed), upload the RFs its perfect
// state lists and it lacks, report. A robot that is not connected, does not answer or presents another host key
// is reported as such; the others still finish. Live progress (files and bytes per robot) is held here and
// read with the `robotSyncProgress` query. Only ids and counts travel through the history.
import {
  ActivityFailure,
  ApplicationFailure,
  ChildWorkflowFailure,
  defineQuery,
  defineSignal,
  executeChild,
  proxyActivities,
  proxyLocalActivities,
  setHandler,
  workflowInfo,
} from '@temporalio/workflow';
import type { InventoryResult } from '../../activities/ssh/inventory';
import type { Counts, RobotProgress, RobotSyncActivities, RobotUploadResult, SyncRobotResult } from '../../activities/ssh/robot-sync';

type Activities = RobotSyncActivities;

// Short reads and writes of the robots collection: local activities (no task queue round trip each).
const { listRobotsToSync, recordRobotSync } = proxyLocalActivities<Activities>({
  startToCloseTimeout: '1 minute',
  retry: { initialInterval: '500 ms', maximumInterval: '10 seconds', maximumAttempts: 10 },
});

const { syncRobot } = proxyActivities<Activities>({
  startToCloseTimeout: '6 hours',
  // A dead worker stops heartbeating: after 10 s another worker retries and resumes from the last offset.
  heartbeatTimeout: '10 seconds',
  retry: { initialInterval: '1 second', maximumInterval: '30 seconds', maximumAttempts: 20 },
});

export type RobotSyncStatus = 'synced' | 'partial' | 'not connected' | 'unknown robot' | 'unreachable' | 'host key mismatch' | 'credential refused' | 'failed';

export interface RobotSyncInput {
  /** Only these robots (default: every robot of the center). */
  robotIds?: string[];
  /** Robots synced at once (default 4). */
  concurrency?: number;
  /** Tests only: slows uploads down so a worker can be killed in the middle of one. */
  throttleBytesPerSec?: number;
}

export interface RobotSyncRobotResult {
  robotId: string;
  status: RobotSyncStatus;
  error?: string;
  inventory?: InventoryResult;
  upload?: RobotUploadResult;
  /** Nothing changed since the last complete sync (SyncRobotResult.unchanged). */
  unchanged?: boolean;
  /** Where the time went (SyncRobotResult.ms). */
  ms?: SyncRobotResult['ms'];
  /** The robot's last_sync is written already (by its activity). */
  recorded?: boolean;
}

export interface RobotSyncResult {
  robots: RobotSyncRobotResult[];
  totals: { uploaded: Counts; skipped: Counts; failed: Counts; sentBytes: number };
}

export interface RobotSyncProgress {
  state: 'running' | 'done';
  robots: Array<RobotProgress & { status: RobotSyncStatus | 'waiting' | 'syncing' }>;
}

export const robotProgressSignal = defineSignal<[RobotProgress]>('robotSyncRobotProgress');
export const robotSyncProgressQuery = defineQuery<RobotSyncProgress>('robotSyncProgress');

/** Activity failure types (activities/ssh/robot-session.ts ROBOT_FAILURE) → the status a specialist reads. */
const STATUS_BY_FAILURE: Record<string, RobotSyncStatus> = {
  HostKeyMismatch: 'host key mismatch',
  RobotUnreachable: 'unreachable',
  RobotCredential: 'credential refused',
  UnknownRobot: 'unknown robot',
};

export interface RobotSyncRobotInput {
  robotId: string;
  /** The parent robotSync workflow, which holds the progress. */
  progressTo: string;
  throttleBytesPerSec?: number;
}

/** One robot: its inventory, then the upload of what its perfect state lists and it lacks. */
export async function robotSyncRobot(input: RobotSyncRobotInput): Promise<RobotSyncRobotResult> {
  const { robotId } = input;
  try {
    // Inventory, then upload, on one SSH session (one activity: the upload plans from the fresh inventory).
    const { inventory, upload, unchanged, ms, recorded } = await syncRobot({ robotId, progressTo: input.progressTo, throttleBytesPerSec: input.throttleBytesPerSec });
    return { robotId, status: upload.failed.files > 0 ? 'partial' : 'synced', inventory, upload, unchanged, ms, recorded };
  } catch (e) {
    const cause = e instanceof ActivityFailure ? e.cause : e;
    if (cause instanceof ApplicationFailure && cause.type && STATUS_BY_FAILURE[cause.type]) {
      return { robotId, status: STATUS_BY_FAILURE[cause.type], error: cause.message };
    }
    throw e;
  }
}

export async function robotSync(input: RobotSyncInput = {}): Promise<RobotSyncResult> {
  const runId = workflowInfo().workflowId;
  const progress = new Map<string, RobotSyncProgress['robots'][number]>();
  let state: RobotSyncProgress['state'] = 'running';
  const zero = (robotId: string) => ({ robotId, files: { done: 0, total: 0 }, bytes: { done: 0, total: 0 } });
  setHandler(robotSyncProgressQuery, () => ({ state, robots: [...progress.values()] }));
  setHandler(robotProgressSignal, (p) => {
    const cur = progress.get(p.robotId);
    if (cur && cur.status === 'syncing') progress.set(p.robotId, { ...cur, ...p });
  });

  const { connected, notConnected, unknown } = await listRobotsToSync({ robotIds: input.robotIds });
  const results: RobotSyncRobotResult[] = [
    ...notConnected.map((robotId) => ({ robotId, status: 'not connected' as const })),
    ...unknown.map((robotId) => ({ robotId, status: 'unknown robot' as const })),
  ];
  for (const r of results) progress.set(r.robotId, { ...zero(r.robotId), status: r.status });
  for (const id of connected) progress.set(id, { ...zero(id), status: 'waiting' });

  // Bounded parallelism: `concurrency` lanes take the next robot as each finishes.
  let next = 0;
  const lane = async () => {
    while (next < connected.length) {
      const robotId = connected[next++];
      progress.set(robotId, { ...progress.get(robotId)!, status: 'syncing' });
      let r: RobotSyncRobotResult;
      try {
        r = await executeChild(robotSyncRobot, {
          workflowId: `${runId}/${robotId}`,
          args: [{ robotId, progressTo: runId, throttleBytesPerSec: input.throttleBytesPerSec }],
        });
      } catch (e) {
        // One robot's unexpected failure never takes the others down: it is that robot's result.
        const cause = e instanceof ChildWorkflowFailure ? (e.cause ?? e) : e;
        r = { robotId, status: 'failed', error: cause instanceof Error ? cause.message : String(cause) };
      }
      results.push(r);
      const done = r.upload ? { files: { done: r.upload.uploaded.files, total: r.upload.planned.files }, bytes: { done: r.upload.sentBytes, total: r.upload.planned.bytes } } : {};
      progress.set(robotId, { ...progress.get(robotId)!, ...done, status: r.status });
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(input.concurrency ?? 4, connected.length)) }, lane));

  const sum = (f: (u: RobotUploadResult) => Counts) =>
    results.reduce((n, r) => (r.upload ? { files: n.files + f(r.upload).files, bytes: n.bytes + f(r.upload).bytes } : n), { files: 0, bytes: 0 });
  const totals = {
    uploaded: sum((u) => u.uploaded),
    skipped: sum((u) => u.skipped),
    failed: sum((u) => u.failed),
    sentBytes: results.reduce((n, r) => n + (r.upload?.sentBytes ?? 0), 0),
  };
  results.sort((a, b) => a.robotId.localeCompare(b.robotId));
  // Synced robots were recorded by their activity; the others (not connected, unreachable...) are recorded here.
  const unrecorded = results.filter((r) => !r.recorded);
  if (unrecorded.length > 0) await recordRobotSync({
    runId,
    results: unrecorded.map((r) => ({
      robotId: r.robotId,
      status: r.status,
      summary: { error: r.error ?? null, uploaded: r.upload?.uploaded ?? null, failed: r.upload ? { files: r.upload.failed.files, bytes: r.upload.failed.bytes } : null, unlisted: r.upload?.unlisted.files ?? null },
    })),
  });
  state = 'done';
  return { robots: results, totals };
}
