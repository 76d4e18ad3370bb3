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
  type CountsAnswer,
  type RolloutStatus,
  type WaveCounts,
  waveSizes,
} from './ota-rollout-contract';
import type { JobStatus } from '../common/protocol';
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

/**
 * `base` moved as `to` differs from `from` (an activity's answer against the counts it was given): the moves of
 * activities that ran side by side add up in any order.
 */
export function shifted(base: readonly WaveCounts[], from: readonly WaveCounts[], to: readonly WaveCounts[]): WaveCounts[] {
  return base.map((w, i) => {
    const f = from[i];
    const t = to[i];
    if (!f || !t) return w;
    const status = { ...w.status };
    for (const k of new Set([...Object.keys(f.status), ...Object.keys(t.status)]) as Set<JobStatus>) {
      const v = (status[k] ?? 0) + (t.status[k] ?? 0) - (f.status[k] ?? 0);
      if (v === 0) delete status[k];
      else status[k] = v;
    }
    return { size: w.size, status, queued: w.queued + t.queued - f.queued, awaitingRobot: w.awaitingRobot + t.awaitingRobot - f.awaitingRobot, inFlight: w.inFlight + t.inFlight - f.inFlight };
  });
}

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
    // A batch still publishing ends first: the jobs it hands out are then ended (and their robots told) with the rest.
    await idle();
    if (endJobs && sum(s.waves.map(unfinished)) > 0) s.waves = await rollout.endRolloutJobs(rolloutId, endJobs, reason ?? status, null);
    s.status = status;
    s.reason = reason;
    await store();
    return { rolloutId, status, reason, waves: s.waves };
  }

  // Pipelined (runs started after this change): a dispatch batch and an apply of reports run side by side, each
  // answering the counts it was given moved by what it stored; the workflow adds each one's moves to what it holds
  // (moves add up in any order: a job reported before the batch that published it returns is counted in flight
  // minus one until it does). A fresh count (stored jobs) is taken with nothing in flight whenever a wave seems to
  // end or a count came back while the other activity was writing.
  const pipeline = patched('rollout-pipeline');
  const running = new Map<'dispatch' | 'apply', { overlapped: boolean }>();
  let settled = 0;
  let failure: unknown = null;
  let trusted: WaveCounts[] = s.waves;
  let recount = false;
  let dispatchedNothing = false;

  function merge(prev: readonly WaveCounts[], answer: CountsAnswer, overlapped: boolean): void {
    if (!Array.isArray(answer) && answer.moved) {
      s.waves = shifted(s.waves, prev, answer.counts);
      return;
    }
    s.waves = trusted = Array.isArray(answer) ? answer : answer.counts;
    if (overlapped) recount = true;
  }
  async function run<T>(name: 'dispatch' | 'apply', start: () => Promise<T>, done: (r: T, overlapped: boolean) => void): Promise<void> {
    for (const other of running.values()) other.overlapped = true;
    const me = { overlapped: running.size > 0 };
    running.set(name, me);
    const p = start().then(
      (r) => {
        running.delete(name);
        settled++;
        done(r, me.overlapped);
      },
      (err: unknown) => {
        running.delete(name);
        settled++;
        failure ??= err;
      },
    );
    if (!pipeline) {
      await p;
      if (failure) throw failure;
    }
  }
  async function idle(): Promise<void> {
    if (running.size > 0) await condition(() => running.size === 0);
    if (failure) throw failure;
  }
  const negative = (w: WaveCounts): boolean => w.queued < 0 || w.awaitingRobot < 0 || w.inFlight < 0;
  // Moved counts that end a wave (or went negative): decisions to fail or complete rest on a fresh count.
  const doubtful = (): boolean => recount || s.waves.some((w, i) => negative(w) || (unfinished(w) <= 0 && unfinished(trusted[i] ?? w) > 0));

  // Decided by the input alone (replays see the same input): runs started before storedJobs existed still create.
  const stored0 = input.storedJobs;
  if (!s.jobsCreated) {
    if (stored0 === undefined) {
      const { jobs } = await rollout.createRolloutJobs(rolloutId);
      // Nothing has happened to fresh jobs yet: the first batch moves these counts instead of counting 10,000 jobs.
      if (pipeline && s.waves.length === 0) s.waves = waveSizes(jobs, o.wavePercents).map((size) => ({ size, status: { PENDING: size }, queued: size, awaitingRobot: 0, inFlight: 0 }));
    }
    s.jobsCreated = true;
  }
  // The first batch also answers with the counts the loop starts from (moved from the stored jobs' when known).
  if (s.waves.length === 0) {
    const fresh: WaveCounts[] | undefined =
      stored0 === undefined ? undefined : [{ size: stored0, status: stored0 > 0 ? { PENDING: stored0 } : {}, queued: stored0, awaitingRobot: 0, inFlight: 0 }];
    s.waves = (await rollout.dispatchRolloutBatch(rolloutId, 0, s.paused ? 0 : Math.min(o.maxConcurrency, DISPATCH_BATCH), fresh, fresh !== undefined)).counts;
  }
  trusted = s.waves;

  for (;;) {
    if (failure) throw failure;
    if (s.cancelRequested) return finish('CANCELED', s.cancelRequested, 'CANCELED');
    if (o.deadlineMs !== null && Date.now() >= o.deadlineMs) return finish('TIMED_OUT', 'rollout deadline passed', 'TIMED_OUT');
    // Before a continue-as-new nothing new starts: the run ends with nothing in flight.
    const draining = pipeline && workflowInfo().continueAsNewSuggested;

    // An apply starts unless one runs, a recount is due (it waits for nothing in flight) or the run is ending.
    const mayApply = () => !running.has('apply') && !recount && !draining;
    if (eventsPending() && mayApply()) {
      if (s.events.reports.length > 0) s.resendAfterMs = o.redispatchAfterMs ?? REDISPATCH_AFTER_MS;
      const reports = s.events.reports.splice(0, APPLY_BATCH);
      const online = s.paused ? [] : s.events.online.splice(0, APPLY_BATCH);
      // Then on to the decisions and the next dispatch: reports streaming in must never starve dispatching.
      // The counts held go along: the activity moves them by what it stored instead of counting again.
      const prev = s.waves;
      const mayDispatch = !s.paused;
      dispatchedNothing = false;
      await run('apply', () => rollout.applyRolloutEvents(rolloutId, { reports, online: [...new Set(online)] }, mayDispatch, prev), (r, overlapped) => merge(prev, r, overlapped));
    }
    if (s.cancelJobs.length > 0) {
      await idle();
      const jobCancel = s.cancelJobs.shift()!;
      s.waves = trusted = await rollout.endRolloutJobs(rolloutId, 'CANCELED', jobCancel.reason, jobCancel.jobIds);
      dispatchedNothing = false;
    }

    const total = sum(s.waves.map((w) => w.size));
    const failed = sum(s.waves.map(failures));
    if (o.abortAfterFailures !== null && failed >= o.abortAfterFailures) {
      return finish('ABORTED', `aborted: ${failed} robots failed (threshold ${o.abortAfterFailures})`, 'CANCELED');
    }
    if (o.abortAfterFailurePct !== null && total > 0 && (failed * 100) / total >= o.abortAfterFailurePct) {
      return finish('ABORTED', `aborted: ${failed} of ${total} robots failed (threshold ${o.abortAfterFailurePct} %)`, 'CANCELED');
    }
    while (s.currentWave < s.waves.length - 1 && (s.waves[s.currentWave].status.COMPLETED ?? 0) >= need(s.currentWave)) s.currentWave++;
    // The end of a wave or of the rollout is decided with nothing in flight, on counts that can be trusted.
    if (running.size === 0) {
      if (doubtful()) {
        s.waves = trusted = (await rollout.dispatchRolloutBatch(rolloutId, 0, 0)).counts;
        recount = false;
        dispatchedNothing = false;
      }
      const cur = s.waves[s.currentWave];
      if (unfinished(cur) === 0 && (cur.status.COMPLETED ?? 0) < need(s.currentWave)) {
        const reason = `wave ${s.currentWave}: ${cur.status.COMPLETED ?? 0} of ${cur.size} robots completed, below the ${o.successThresholdPct} % threshold`;
        return finish('FAILED', reason, 'CANCELED');
      }
      if (sum(s.waves.map(unfinished)) === 0) return finish('COMPLETED', null, null);
    }

    s.status = s.paused ? 'PAUSED' : 'RUNNING';
    await store();

    const inFlight = sum(s.waves.map((w) => w.inFlight));
    const queued = sum(s.waves.slice(0, s.currentWave + 1).map((w) => w.queued));
    const slots = o.maxConcurrency - inFlight;
    if (!s.paused && slots > 0 && queued > 0 && !running.has('dispatch') && !recount && !draining && !dispatchedNothing) {
      const prev = s.waves;
      let handedOut = 0;
      await run(
        'dispatch',
        () => rollout.dispatchRolloutBatch(rolloutId, s.currentWave, Math.min(slots, DISPATCH_BATCH), prev),
        (batch, overlapped) => {
          merge(prev, batch, overlapped);
          handedOut = batch.dispatched + batch.awaitingRobot;
          dispatchedNothing = handedOut === 0;
        },
      );
      if (!pipeline && handedOut > 0) continue;
    }

    if (workflowInfo().continueAsNewSuggested && running.size === 0) {
      await condition(allHandlersFinished);
      await continueAsNew<typeof otaRollout>(input, s);
    }
    const paused = s.paused;
    const seen = settled;
    const wake = () =>
      (eventsPending() && mayApply()) || s.cancelJobs.length > 0 || s.cancelRequested !== null || s.paused !== paused || settled !== seen;
    // Liveness: with jobs in flight, silence is bounded; past it they are sent again with a fresh URL (backoff).
    // With an activity in flight its end wakes the loop anyway.
    const base = o.redispatchAfterMs ?? REDISPATCH_AFTER_MS;
    const silence = running.size === 0 && patched('rollout-liveness') && !s.paused && inFlight > 0 ? (s.resendAfterMs ??= base) : null;
    const toDeadline = o.deadlineMs === null ? null : Math.max(1, o.deadlineMs - Date.now());
    const waitMs = silence === null ? toDeadline : toDeadline === null ? silence : Math.min(silence, toDeadline);
    const woke = waitMs === null ? await condition(wake) : await condition(wake, waitMs);
    if (s.paused !== paused) dispatchedNothing = false;
    if (!woke && silence !== null && waitMs === silence) {
      s.waves = trusted = await rollout.resendInFlight(rolloutId);
      dispatchedNothing = false;
      s.resendAfterMs = Math.min(silence * 2, base * REDISPATCH_BACKOFF_MAX);
    }
  }
}
