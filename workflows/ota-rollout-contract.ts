// What the API, the MQTT bridge and the otaRollout workflow agree on: ids, input, options, signals, query.
// Workflow-safe module: only @temporalio/workflow definitions and types.
import { defineQuery, defineSignal } from '@temporalio/workflow';
import type { JobStatus, RobotStatus } from '../common/protocol';

export const OTA_ROLLOUT_WORKFLOW = 'otaRollout';

/** The workflow id carries the rollout id (Temporal Web: `ota-rollout-<id>`, also searchable by DeploymentId). */
export const rolloutWorkflowId = (rolloutId: string): string => `ota-rollout-${rolloutId}`;

/** Where a rollout stands; stored on the rollout document by the workflow. */
export const ROLLOUT_STATUSES = ['RUNNING', 'PAUSED', 'COMPLETED', 'FAILED', 'ABORTED', 'CANCELED', 'TIMED_OUT'] as const;
export type RolloutStatus = (typeof ROLLOUT_STATUSES)[number];
export const isRolloutFinished = (s: RolloutStatus): boolean => s !== 'RUNNING' && s !== 'PAUSED';

/** A rollout job's place in the dispatch pipeline (job field `dispatch_state`). */
export type DispatchState = 'queued' | 'awaiting_robot' | 'dispatched';

export interface RolloutOptions {
  /** Cumulative share of the robots reached by the end of each wave, in percent, ascending, last = 100. */
  wavePercents: number[];
  /** A wave lets the next one start once this share of its robots has COMPLETED. */
  successThresholdPct: number;
  /** Most robots with a dispatched, unfinished job at once. */
  maxConcurrency: number;
  /** Abort once this many jobs have FAILED or TIMED_OUT (null: no count limit). */
  abortAfterFailures: number | null;
  /** Abort once this share of all the rollout's robots have FAILED or TIMED_OUT (null: no share limit). */
  abortAfterFailurePct: number | null;
  /** Epoch ms after which unfinished jobs end TIMED_OUT and the rollout ends TIMED_OUT (null: none). */
  deadlineMs: number | null;
  /**
   * Liveness: jobs in flight with no report for this long are sent again (fresh presigned URL), the wait doubling
   * after each resend that brought nothing, up to 16×; any report resets it. Absent in rollouts started before
   * it existed: 60 s.
   */
  redispatchAfterMs?: number;
}

export interface OtaRolloutInput {
  rolloutId: string;
  options: RolloutOptions;
  /**
   * Set by the API's batching of single deploys when it starts the run right after storing the batch: this many
   * jobs exist already (one wave, all queued, none ended). The run then skips the creation activity and its first
   * dispatch moves these counts instead of counting the jobs (measured: an activity, a workflow task and 3 scans
   * per batch). Absent for real rollouts and for a batch the reconciler starts late (its jobs may have been
   * canceled meanwhile): those count.
   */
  storedJobs?: number;
}

/** One robot's report for a rollout job, batched by the bridge (only status changes; never progress ticks). */
export interface RolloutReport {
  jobId: string;
  robotId: string;
  status: RobotStatus;
  error_msg: string | null;
}

/** What the bridge gathered for one rollout during its aggregation window. */
export interface RolloutEvents {
  reports: RolloutReport[];
  /** Jobs whose robot came (back) online: dispatched again, the daemon dedupes by job id. */
  online: string[];
}

export interface WaveCounts {
  size: number;
  /** Jobs per status. */
  status: Partial<Record<JobStatus, number>>;
  queued: number;
  awaitingRobot: number;
  inFlight: number;
}

/**
 * Counts as a rollout activity answers them: `moved`, the counts it was given moved by what it stored itself
 * (nothing counted twice); else counted afresh from the stored jobs. Bare arrays: answers recorded before `moved`.
 */
export type CountsAnswer = WaveCounts[] | { counts: WaveCounts[]; moved?: boolean };

export interface RolloutProgress {
  status: RolloutStatus;
  paused: boolean;
  /** Index of the last wave allowed to dispatch. */
  currentWave: number;
  waves: WaveCounts[];
  reason: string | null;
}

export const rolloutEventsSignal = defineSignal<[RolloutEvents]>('rolloutEvents');
export const pauseRolloutSignal = defineSignal('pauseRollout');
export const resumeRolloutSignal = defineSignal('resumeRollout');
export const cancelRolloutSignal = defineSignal<[{ reason?: string }]>('cancelRollout');
/** Operator cancel of single jobs of the rollout (POST /job/{id}/cancel on one of its jobs). */
export const cancelRolloutJobsSignal = defineSignal<[{ jobIds: string[]; reason?: string }]>('cancelRolloutJobs');
export const rolloutProgressQuery = defineQuery<RolloutProgress>('rolloutProgress');

/** Wave sizes for `total` robots: cumulative percentages, each wave at least one robot, empty waves dropped. */
export function waveSizes(total: number, wavePercents: readonly number[]): number[] {
  const sizes: number[] = [];
  let reached = 0;
  for (const pct of wavePercents) {
    const upTo = Math.min(total, Math.max(reached + 1, Math.ceil((total * pct) / 100)));
    if (upTo > reached) sizes.push(upTo - reached);
    reached = upTo;
  }
  if (reached < total) sizes.push(total - reached);
  return sizes;
}
