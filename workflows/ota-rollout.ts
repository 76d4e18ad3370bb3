// otaRollout: one workflow per rollout (one file, many robots). Per-robot state lives in the rollout's job
// documents; this workflow holds counts and cursors only, so its history grows with batches, not robots.
//
// Sequence: create every job in bulk → loop { apply the robots' batched reports (the bridge aggregates them per
// rollout over a short window into one rolloutEvents signal) → abort if failures reach the threshold → open the
// next wave once the current one has enough successes → dispatch a batch of queued robots up to the concurrency
// cap → wait for events } → terminal COMPLETED / FAILED (a wave ended under its threshold) / ABORTED / CANCELED /
// TIMED_OUT, with unfinished jobs ended in bulk and their robots told to cancel.
// Robots that are offline when their turn comes wait (awaiting_robot) without holding a concurrency slot; the
// bridge forwards their presence and they are dispatched when they return. Pause stops new dispatches only.
// Continue-as-new keeps the history bounded; buffered events travel with the carry.
//
// Deterministic: no I/O here; activities are imported as types only.
import {
  allHandlersFinished,
  condition,
  continueAsNew,
  patched,
  proxyActivities,
  setHandler,
  workflowInfo,
} from '@temporalio/workflow';
import type { OtaRolloutActivities } from '../activities/mqtt/ota-rollout';
import {
  cancelRolloutJobsSignal,
  cancelRolloutSignal,
  pauseRolloutSignal,
  resumeRolloutSignal,
  rolloutEventsSignal,
  rolloutProgressQuery,
  type OtaRolloutInput,
  type RolloutEvents,
  type RolloutStatus,
  type WaveCounts,
} from './ota-rollout-contract';
import { RETRY_UNTIL_INFRA_RECOVERS } from './ota-deployment';

/**
 * Robots per dispatch activity: one presigned URL, this many signed messages and QoS 1 publishes, no job write
 * for online robots (dispatch cursor). 250 left a 1,000-robot rollout's last batch waiting behind the first
 * batches' report writes (measured: dispatched at 52-58 s of 96 s); the payloads stay tiny either way.
 */
export const DISPATCH_BATCH = 1000;
/** Reports per apply activity (its input stays far below Temporal's payload warning of 256 KB). */
const APPLY_BATCH = 1000;
/** Liveness defaults: first resend of jobs in flight after this much silence; the wait grows to 16× at most. */
const REDISPATCH_AFTER_MS = 60_000;
const REDISPATCH_BACKOFF_MAX = 16;

// The activities heartbeat per chunk of work: a worker killed mid-batch has its batch retried after the heartbeat
// timeout, not after the whole start-to-close bound.
const rollout = proxyActivities<OtaRolloutActivities>({ startToCloseTimeout: '5 minutes', heartbeatTimeout: '20 seconds', retry: RETRY_UNTIL_INFRA_RECOVERS });

export interface OtaRolloutCarry {
  status: RolloutStatus;
  paused: boolean;
  currentWave: number;
  reason: string | null;
  jobsCreated: boolean;
  waves: WaveCounts[];
  events: RolloutEvents;
  cancelJobs: { jobIds: string[]; reason: string }[];
  cancelRequested: string | null;
  /** Liveness backoff: the current silence before jobs in flight are sent again. */
  resendAfterMs?: number;
}

export interface OtaRolloutResult {
  rolloutId: string;
  status: RolloutStatus;
  reason: string | null;
  waves: WaveCounts[];
}

const sum = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0);
const failures = (w: WaveCounts): number => (w.status.FAILED ?? 0) + (w.status.TIMED_OUT ?? 0);
const unfinished = (w: WaveCounts): number => w.queued + w.awaitingRobot + w.inFlight;

export async function otaRollout(input: OtaRolloutInput, carried?: OtaRolloutCarry): Promise<OtaRolloutResult> {
  const { rolloutId, options: o } = input;
  const s: OtaRolloutCarry = carried ?? {
    status: 'RUNNING',
    paused: false,
    currentWave: 0,
    reason: null,
    jobsCreated: false,
    waves: [],
    events: { reports: [], online: [] },
    cancelJobs: [],
    cancelRequested: null,
  };

  setHandler(rolloutEventsSignal, (e) => {
    s.events.reports.push(...e.reports);
    s.events.online.push(...e.online);
  });
  setHandler(pauseRolloutSignal, () => {
    s.paused = true;
  });
  setHandler(resumeRolloutSignal, () => {
    s.paused = false;
  });
  setHandler(cancelRolloutSignal, ({ reason }) => {
    s.cancelRequested ??= reason ? `canceled: ${reason}` : 'rollout canceled by operator';
  });
  setHandler(cancelRolloutJobsSignal, ({ jobIds, reason }) => {
    s.cancelJobs.push({ jobIds, reason: reason ? `canceled: ${reason}` : 'canceled by operator' });
  });
  setHandler(rolloutProgressQuery, () => ({ status: s.status, paused: s.paused, currentWave: s.currentWave, waves: s.waves, reason: s.reason }));

  const need = (w: number): number => Math.ceil((s.waves[w].size * o.successThresholdPct) / 100);
  // While paused, robots coming back online stay buffered: they are dispatched after the resume.
  const eventsPending = () => s.events.reports.length > 0 || (!s.paused && s.events.online.length > 0);

  // The API stored the rollout RUNNING at creation; a continued run starts from what its predecessor stored.
  let stored = carried ? '' : 'RUNNING|false|0|null';
  async function store(): Promise<void> {
    const key = `${s.status}|${s.paused}|${s.currentWave}|${s.reason}`;
    if (key === stored) return;
    await rollout.setRolloutState(rolloutId, { status: s.status, paused: s.paused, currentWave: s.currentWave, reason: s.reason });
    stored = key;
  }

  async function finish(status: RolloutStatus, reason: string | null, endJobs: 'CANCELED' | 'TIMED_OUT' | null): Promise<OtaRolloutResult> {
    if (endJobs && sum(s.waves.map(unfinished)) > 0) s.waves = await rollout.endRolloutJobs(rolloutId, endJobs, reason ?? status, null);
    s.status = status;
    s.reason = reason;
    await store();
    return { rolloutId, status, reason, waves: s.waves };
  }

  // Decided by the input alone (replays see the same input): runs started before storedJobs existed still create.
  const stored0 = input.storedJobs;
  if (!s.jobsCreated) {
    if (stored0 === undefined) await rollout.createRolloutJobs(rolloutId);
    s.jobsCreated = true;
  }
  // The first batch also answers with the counts the loop starts from (moved from the stored jobs' when known).
  if (s.waves.length === 0) {
    const fresh: WaveCounts[] | undefined =
      stored0 === undefined ? undefined : [{ size: stored0, status: stored0 > 0 ? { PENDING: stored0 } : {}, queued: stored0, awaitingRobot: 0, inFlight: 0 }];
    s.waves = (await rollout.dispatchRolloutBatch(rolloutId, 0, s.paused ? 0 : Math.min(o.maxConcurrency, DISPATCH_BATCH), fresh, fresh !== undefined)).counts;
  }

  for (;;) {
    if (s.cancelRequested) return finish('CANCELED', s.cancelRequested, 'CANCELED');
    if (o.deadlineMs !== null && Date.now() >= o.deadlineMs) return finish('TIMED_OUT', 'rollout deadline passed', 'TIMED_OUT');

    if (eventsPending()) {
      if (s.events.reports.length > 0) s.resendAfterMs = o.redispatchAfterMs ?? REDISPATCH_AFTER_MS;
      const reports = s.events.reports.splice(0, APPLY_BATCH);
      const online = s.paused ? [] : s.events.online.splice(0, APPLY_BATCH);
      // Then on to the decisions and the next dispatch: reports streaming in must never starve dispatching.
      // The counts held go along: the activity moves them by what it stored instead of counting again.
      s.waves = await rollout.applyRolloutEvents(rolloutId, { reports, online: [...new Set(online)] }, !s.paused, s.waves);
    }
    const jobCancel = s.cancelJobs.shift();
    if (jobCancel) s.waves = await rollout.endRolloutJobs(rolloutId, 'CANCELED', jobCancel.reason, jobCancel.jobIds);

    const total = sum(s.waves.map((w) => w.size));
    const failed = sum(s.waves.map(failures));
    if (o.abortAfterFailures !== null && failed >= o.abortAfterFailures) {
      return finish('ABORTED', `aborted: ${failed} robots failed (threshold ${o.abortAfterFailures})`, 'CANCELED');
    }
    if (o.abortAfterFailurePct !== null && total > 0 && (failed * 100) / total >= o.abortAfterFailurePct) {
      return finish('ABORTED', `aborted: ${failed} of ${total} robots failed (threshold ${o.abortAfterFailurePct} %)`, 'CANCELED');
    }
    while (s.currentWave < s.waves.length - 1 && (s.waves[s.currentWave].status.COMPLETED ?? 0) >= need(s.currentWave)) s.currentWave++;
    const cur = s.waves[s.currentWave];
    if (unfinished(cur) === 0 && (cur.status.COMPLETED ?? 0) < need(s.currentWave)) {
      const reason = `wave ${s.currentWave}: ${cur.status.COMPLETED ?? 0} of ${cur.size} robots completed, below the ${o.successThresholdPct} % threshold`;
      return finish('FAILED', reason, 'CANCELED');
    }
    if (sum(s.waves.map(unfinished)) === 0) return finish('COMPLETED', null, null);

    s.status = s.paused ? 'PAUSED' : 'RUNNING';
    await store();

    const inFlight = sum(s.waves.map((w) => w.inFlight));
    const queued = sum(s.waves.slice(0, s.currentWave + 1).map((w) => w.queued));
    const slots = o.maxConcurrency - inFlight;
    if (!s.paused && slots > 0 && queued > 0) {
      const batch = await rollout.dispatchRolloutBatch(rolloutId, s.currentWave, Math.min(slots, DISPATCH_BATCH), s.waves);
      s.waves = batch.counts;
      if (batch.dispatched + batch.awaitingRobot > 0) continue;
    }

    if (workflowInfo().continueAsNewSuggested) {
      await condition(allHandlersFinished);
      await continueAsNew<typeof otaRollout>(input, s);
    }
    const paused = s.paused;
    const wake = () => eventsPending() || s.cancelJobs.length > 0 || s.cancelRequested !== null || s.paused !== paused;
    // Liveness: with jobs in flight, silence is bounded; past it they are sent again with a fresh URL (backoff).
    const base = o.redispatchAfterMs ?? REDISPATCH_AFTER_MS;
    const silence = patched('rollout-liveness') && !s.paused && inFlight > 0 ? (s.resendAfterMs ??= base) : null;
    const toDeadline = o.deadlineMs === null ? null : Math.max(1, o.deadlineMs - Date.now());
    const waitMs = silence === null ? toDeadline : toDeadline === null ? silence : Math.min(silence, toDeadline);
    const woke = waitMs === null ? await condition(wake) : await condition(wake, waitMs);
    if (!woke && silence !== null && waitMs === silence) {
      s.waves = await rollout.resendInFlight(rolloutId);
      s.resendAfterMs = Math.min(silence * 2, base * REDISPATCH_BACKOFF_MAX);
    }
  }
}
