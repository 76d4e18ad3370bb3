// otaDeployment: one workflow per OTA job, from the PENDING document the API created to a terminal status.
//
// WHERE "RETRY WHILE THE ROBOT IS OFFLINE" LIVES: here, in the workflow's phases, not in an activity retry
// policy. dispatchDeploy checks the robot's presence and returns 'robot_offline' without publishing; the
// workflow then waits durably (a condition, no timer, no polling) for the MQTT bridge's robotPresence
// ({online:true}) signal and dispatches again. A robot that drops offline mid-job is handled the same way:
// wait for online, re-dispatch (the daemon dedupes by job id). The activity retry policy below,
// RETRY_UNTIL_INFRA_RECOVERS, only covers the cloud's own infrastructure (broker, database, S3 unreachable).
//
// Sequence: dispatch → (robot offline? wait for presence → dispatch) → follow the robot's reports, persisting
// status transitions (those decided together are stored in one write, each kept in the job's history) → terminal COMPLETED / FAILED (robot)
// or CANCELED (cancel signal or Temporal cancellation) / TIMED_OUT (optional deadline) → store it → on
// CANCELED/TIMED_OUT tell the robot to abort → ack the job id so the daemon forgets it.
//
// Deterministic: no I/O here; activities are imported as types only. Live progress stays in workflow state
// (jobProgress query); only transitions reach the database and the JobState search attribute.
import {
  ActivityFailure,
  allHandlersFinished,
  ApplicationFailure,
  CancellationScope,
  condition,
  continueAsNew,
  isCancellation,
  log,
  patched,
  proxyActivities,
  proxyLocalActivities,
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
  type RetryPolicy,
} from '@temporalio/workflow';
import type { DispatchOutcome, OtaMqttActivities } from '../activities/mqtt/ota';
import type { OtaJobActivities } from '../activities/db/ota-jobs';
import type { JobStatus } from '../common/protocol';
import {
  cancelJobSignal,
  jobProgressQuery,
  robotPresenceSignal,
  robotReportSignal,
  type OtaDeploymentInput,
  type OtaDeploymentResult,
} from './ota-contract';
import { isForwardTransition, isTerminalStatus } from './ota-status';
import { JOB_STATE_SA } from './search-attributes';

/**
 * Infrastructure retries only (see the header): unlimited attempts with a capped backoff, so an outage of the
 * broker, database or S3 delays a job instead of failing it. Errors that retrying cannot fix (job missing or
 * invalid) are thrown non-retryable by the activities and end the job FAILED.
 */
export const RETRY_UNTIL_INFRA_RECOVERS: RetryPolicy = {
  initialInterval: '1 second',
  backoffCoefficient: 2,
  maximumInterval: '1 minute',
};

/**
 * Workflow versioning: runs whose history was written before this change (one status write per transition, a
 * terminal decision could be followed by another) replay the old way; new runs store only the latest transition.
 * Once no run older than the change is open, replace with deprecatePatch and drop the old branches.
 */
const RECORD_LATEST_ONLY = 'ota-record-latest-only';
/** Versioning marker: runs started before it do not re-dispatch on an "online" while following. */
const REDISPATCH_ON_ONLINE = 'ota-redispatch-on-online';
/**
 * Versioning marker of the lean run (measured: each activity, signal and search-attribute upsert of a job is a
 * Temporal operation, and those bound how many jobs a second the cluster serves). A lean run stores nothing
 * until the job is decided: RECEIVED / DOWNLOADING live in workflow state (jobProgress query, which job_state
 * reads) and are written with the terminal status, in its `transitions`, by one finishJob activity that also
 * tells the robot (cancel when the cloud ended the job, then the ack). JobState is upserted once, at the end.
 */
const LEAN = 'ota-lean-single-job';

/**
 * Versioning marker: dispatchDeploy and finishJob run as local activities. Measured on the 200-robot burst: an
 * activity task costs the job two extra workflow tasks and a matching round trip through the Temporal server
 * (schedule, start, complete, then a workflow task to see the result), the operations that bound how many jobs a
 * second the dev server serves; a local activity runs inside the workflow task that needs it and leaves one
 * marker. Same guarantees: at least once (a worker that dies mid-call fails the workflow task, which runs the
 * call again), both activities idempotent, the same infrastructure retries (backed off with durable timers past
 * localRetryThreshold), results that carry no secret.
 */
const LOCAL = 'ota-local-activities';

const robotLink = proxyActivities<OtaMqttActivities>({ startToCloseTimeout: '30 seconds', retry: RETRY_UNTIL_INFRA_RECOVERS });
const robotLinkLocal = proxyLocalActivities<OtaMqttActivities>({
  startToCloseTimeout: '30 seconds',
  retry: RETRY_UNTIL_INFRA_RECOVERS,
  // Past this, retries wait on a timer in history instead of inside one workflow task.
  localRetryThreshold: '10 seconds',
});
const jobStore = proxyActivities<OtaJobActivities>({ startToCloseTimeout: '30 seconds', retry: RETRY_UNTIL_INFRA_RECOVERS });

/** dispatch: publish the job; awaitOnline: robot offline, wait for its presence; follow: job is on the robot. */
export type OtaPhase = 'dispatch' | 'awaitOnline' | 'follow';

interface Transition {
  status: JobStatus;
  error_msg: string | null;
}

/** Everything a run hands to its continuation (continue-as-new keeps long waits from growing one history). */
export interface OtaDeploymentCarry {
  phase: OtaPhase;
  status: JobStatus;
  progress: number | null;
  error_msg: string | null;
  robotOnline: boolean;
  dispatches: number;
  /** Epoch ms (workflow time) after which the job ends TIMED_OUT; null: no deadline. */
  deadlineMs: number | null;
  /** Transitions decided but not yet stored (normally empty at continue-as-new). */
  unrecorded: Transition[];
  /** The robot has reported on this job at least once (after that, silence is no reason to re-send). */
  heardFromRobot?: boolean;
  /** Re-dispatches made because the robot stayed silent (the backoff exponent). */
  silentRedispatches?: number;
}

/** Liveness (lean runs): first wait for a report after a dispatch, doubled per silent re-dispatch, capped. */
export const NO_REPORT_REDISPATCH_SECONDS = 60;
const NO_REPORT_REDISPATCH_MAX_SECONDS = 600;

export async function otaDeployment(input: OtaDeploymentInput, carried?: OtaDeploymentCarry): Promise<OtaDeploymentResult> {
  const { jobId, robotId } = input;
  if (!jobId || !robotId) throw ApplicationFailure.nonRetryable('otaDeployment needs a jobId and a robotId', 'InvalidInput');

  const s: OtaDeploymentCarry = carried ?? {
    phase: 'dispatch',
    status: 'PENDING',
    progress: null,
    error_msg: null,
    robotOnline: false,
    dispatches: 0,
    deadlineMs: input.timeoutSeconds ? Date.now() + input.timeoutSeconds * 1000 : null,
    unrecorded: [],
  };
  // Presence signals counted in this run. A wait compares against the count taken when it started, so a signal
  // that lands while an activity is in flight is never lost (no "check, then sleep" race).
  let onlineSignals = 0;
  let reportsSeen = 0;
  let offlineSignals = 0;
  let onlineMark = 0; // awaitOnline: dispatch again once onlineSignals > onlineMark
  let offlineMark = 0; // follow: the robot dropped off once offlineSignals > offlineMark

  // A terminal decision is final (a dispatch failure landing in the same activation as a cancel must not replace
  // CANCELED). So s.unrecorded only ever holds forward moves, and its last entry is where the job stands.
  const decide = (status: JobStatus, error_msg: string | null): void => {
    if (isTerminalStatus(s.status) && isPatched(RECORD_LATEST_ONLY)) return;
    s.status = status;
    s.error_msg = error_msg;
    s.unrecorded.push({ status, error_msg });
  };

  // Decided once per run: a run started before the lean version replays the way it was written.
  const lean = patched(LEAN);
  // Local activities only in lean runs (they are the ones with one dispatch and one finish activity per job).
  const local = lean && patched(LOCAL);
  const link = local ? robotLinkLocal : robotLink;
  // Local-activity runs ask every later patch here, before their first local activity: a marker recorded in
  // the workflow task a local activity finished in was met, when a signal storm made the worker rebuild the
  // run from history, before the code that asks for it (nondeterminism: the job stuck, signals piling up).
  // Runs without local activities keep asking where they always did, so their histories replay unchanged.
  const early = local ? new Map([REDISPATCH_ON_ONLINE, RECORD_LATEST_ONLY].map((id) => [id, patched(id)])) : null;
  function isPatched(id: typeof REDISPATCH_ON_ONLINE | typeof RECORD_LATEST_ONLY): boolean {
    return early?.get(id) ?? patched(id);
  }

  // Handlers first: signals sent before the first activation (e.g. an early presence) are buffered until now.
  setHandler(robotReportSignal, (report) => {
    reportsSeen++;
    s.heardFromRobot = true;
    if (report.status === s.status) {
      if (!isTerminalStatus(s.status) && report.progress !== undefined) s.progress = report.progress;
      return;
    }
    // Late, duplicated or out-of-order reports (RECEIVED after DOWNLOADING, anything after terminal) are no-ops.
    if (!isForwardTransition(s.status, report.status)) {
      log.debug('report ignored: not a forward transition', { jobId, from: s.status, to: report.status });
      return;
    }
    if (report.progress !== undefined) s.progress = report.progress;
    else if (report.status === 'COMPLETED') s.progress = 100;
    decide(report.status, report.status === 'FAILED' ? (report.error_msg ?? 'robot reported FAILED without an error message') : null);
  });
  setHandler(robotPresenceSignal, ({ online }) => {
    s.robotOnline = online;
    if (online) onlineSignals++;
    else offlineSignals++;
  });
  setHandler(cancelJobSignal, ({ reason }) => {
    if (!isTerminalStatus(s.status)) decide('CANCELED', reason ? `canceled: ${reason}` : 'canceled by operator');
  });
  setHandler(jobProgressQuery, () => ({
    status: s.status,
    progress: s.progress,
    error_msg: s.error_msg,
    robotOnline: s.robotOnline,
    dispatches: s.dispatches,
  }));

  /**
   * Waits until `ready()` or the job is decided; decides TIMED_OUT if the deadline passes first. With `limitMs`,
   * gives up after that long (false) without deciding anything.
   */
  async function waitUntil(ready: () => boolean, limitMs?: number): Promise<boolean> {
    const wake = () => ready() || isTerminalStatus(s.status);
    if (s.deadlineMs === null) {
      if (limitMs === undefined) await condition(wake);
      else return condition(wake, limitMs);
      return true;
    }
    const left = s.deadlineMs - Date.now();
    if (limitMs !== undefined && limitMs < left) return condition(wake, limitMs);
    if (left > 0 && (await condition(wake, left))) return true;
    if (!isTerminalStatus(s.status)) decide('TIMED_OUT', `not finished within ${input.timeoutSeconds ?? '?'} s`);
    return true;
  }

  /** Runs `call`, abandoning (cancelling) it if the job is decided meanwhile: cancel and timeout never wait on I/O. */
  async function unlessDecided<T>(call: () => Promise<T>): Promise<T | undefined> {
    const work = new CancellationScope();
    const watch = new CancellationScope();
    try {
      return await Promise.race([work.run(call), watch.run(() => waitUntil(() => false).then(() => undefined))]);
    } finally {
      // Whichever lost is cancelled; its rejection is absorbed by the settled race. A Temporal cancellation of
      // the whole workflow rejects the race itself and propagates to the caller.
      work.cancel();
      watch.cancel();
    }
  }

  /**
   * Stores where the job stands and mirrors it in the JobState search attribute. Transitions decided since the
   * last write are collapsed into the latest one (RECEIVED, DOWNLOADING and COMPLETED often arrive together): it
   * is a forward move from whatever was stored before, which the database guard accepts, and each stored step
   * costs an activity and a search-attribute upsert, the Temporal operations that bound fleet throughput.
   * Loops until nothing is left, so finish() has the terminal status stored before it publishes the ack.
   */
  async function record(): Promise<void> {
    while (s.unrecorded.length > 0) {
      // Transitions decided while the write runs are not taken: they stay for the next round.
      const taken = isPatched(RECORD_LATEST_ONLY) ? s.unrecorded.length : 1;
      const t = s.unrecorded[taken - 1];
      // The statuses passed through on the way are stored with it, so every state change is persisted.
      const passedThrough = s.unrecorded.slice(0, taken - 1).map((u) => u.status);
      const stored = await jobStore.recordJobStatus(jobId, t.status, t.error_msg, passedThrough);
      if (!stored.applied) log.warn('status not applied by the database guard', { jobId, status: t.status, current: stored.current });
      upsertSearchAttributes([{ key: JOB_STATE_SA, value: stored.applied ? t.status : (stored.current ?? t.status) }]);
      s.unrecorded.splice(0, taken); // only after success: an interrupted write is retried by finish()
    }
  }

  async function dispatch(): Promise<void> {
    const onlineBefore = onlineSignals;
    const offlineBefore = offlineSignals;
    let outcome: DispatchOutcome | undefined;
    try {
      outcome = await unlessDecided(() => (input.job ? link.dispatchDeploy(jobId, robotId, input.job) : link.dispatchDeploy(jobId)));
    } catch (err) {
      // Infrastructure errors retry forever, so an activity failure that is not a cancellation is final. A
      // remote activity's failure arrives as an ActivityFailure around its cause; a local activity's as the
      // ApplicationFailure it threw.
      if (isCancellation(err)) throw err;
      if (err instanceof ActivityFailure) decide('FAILED', err.cause?.message ?? err.message);
      else if (err instanceof ApplicationFailure) decide('FAILED', err.message);
      else throw err;
      return;
    }
    if (outcome === undefined) return; // canceled or timed out while dispatching
    if (outcome === 'dispatched') {
      s.dispatches++;
      if (offlineSignals === offlineBefore) s.robotOnline = true;
      s.phase = 'follow';
      offlineMark = offlineBefore; // an offline signal during the dispatch still counts
      onlineMark = onlineSignals; // the robot was online for this dispatch: only a later "online" re-sends
    } else {
      if (onlineSignals === onlineBefore) s.robotOnline = false;
      s.phase = 'awaitOnline';
      onlineMark = onlineBefore; // an online signal during the dispatch wakes us at once
    }
  }

  async function drive(): Promise<void> {
    for (;;) {
      if (!lean) await record();
      if (isTerminalStatus(s.status)) return;
      if (workflowInfo().continueAsNewSuggested) {
        await condition(allHandlersFinished);
        await continueAsNew<typeof otaDeployment>(input, { ...s, unrecorded: [...s.unrecorded] });
      }
      // Lean: nothing is stored before the end, so an undecided transition is no reason to wake.
      const pending = () => (!lean && s.unrecorded.length > 0) || workflowInfo().continueAsNewSuggested;
      switch (s.phase) {
        case 'dispatch':
          await dispatch();
          break;
        case 'awaitOnline': {
          const mark = onlineMark;
          await waitUntil(() => onlineSignals > mark || pending());
          if (onlineSignals > mark) s.phase = 'dispatch';
          break;
        }
        case 'follow': {
          const mark = offlineMark;
          const onMark = onlineMark;
          const redispatchOnOnline = isPatched(REDISPATCH_ON_ONLINE);
          // Liveness: until the robot has reported on the job, its silence is bounded (a lost message, a robot
          // that dropped it): the job is sent again, with a fresh URL, waiting twice as long each time.
          const heard = reportsSeen;
          const silenceMs =
            lean && !s.heardFromRobot
              ? Math.min(NO_REPORT_REDISPATCH_MAX_SECONDS, (input.noReportRedispatchSeconds ?? NO_REPORT_REDISPATCH_SECONDS) * 2 ** (s.silentRedispatches ?? 0)) * 1000
              : undefined;
          const woke = await waitUntil(
            () => offlineSignals > mark || (redispatchOnOnline && onlineSignals > onMark) || pending() || (silenceMs !== undefined && reportsSeen > heard),
            silenceMs,
          );
          if (!woke) {
            s.silentRedispatches = (s.silentRedispatches ?? 0) + 1;
            log.warn('no report from the robot: dispatching again', { jobId, robotId, silentRedispatches: s.silentRedispatches });
            s.phase = 'dispatch';
          } else if (offlineSignals > mark && !isTerminalStatus(s.status)) {
            // Back online within the same batch of signals: re-dispatch now; else wait for the next "online".
            s.phase = s.robotOnline ? 'dispatch' : 'awaitOnline';
            onlineMark = onlineSignals;
            offlineMark = offlineSignals;
          } else if (redispatchOnOnline && onlineSignals > onMark && !isTerminalStatus(s.status)) {
            // The robot (re)connected while we follow: a broker that lost its queued deploy message (or a robot
            // whose session expired) would leave it without the job, so send it again; the daemon dedupes by id.
            s.phase = 'dispatch';
            onlineMark = onlineSignals;
          }
          break;
        }
      }
    }
  }

  async function finish(): Promise<OtaDeploymentResult> {
    if (lean) {
      const t = s.unrecorded[s.unrecorded.length - 1] ?? { status: s.status, error_msg: s.error_msg };
      const passedThrough = s.unrecorded.slice(0, -1).map((u) => u.status);
      const stored = await link.finishJob(jobId, robotId, t.status, t.error_msg, passedThrough);
      if (!stored.applied) log.warn('status not applied by the database guard', { jobId, status: t.status, current: stored.current });
      upsertSearchAttributes([{ key: JOB_STATE_SA, value: stored.applied ? t.status : (stored.current ?? t.status) }]);
      s.unrecorded = [];
      return { jobId, status: s.status, error_msg: s.error_msg, dispatches: s.dispatches };
    }
    await record();
    // The robot may hold the deploy message or a half-done download: make sure it never installs the file.
    if (s.status === 'CANCELED' || s.status === 'TIMED_OUT') await robotLink.publishCancel(robotId, jobId);
    await robotLink.publishAck(robotId, jobId);
    return { jobId, status: s.status, error_msg: s.error_msg, dispatches: s.dispatches };
  }

  let temporalCancellation: unknown = null;
  try {
    await drive();
  } catch (err) {
    if (!isCancellation(err)) throw err;
    temporalCancellation = err;
    if (!isTerminalStatus(s.status)) decide('CANCELED', 'canceled: Temporal cancellation request');
  }
  // Storing the terminal status and telling the robot must complete even while the workflow is being cancelled.
  const result = await CancellationScope.nonCancellable(finish);
  // Cancelled from Temporal: end as Canceled too, so Temporal Web and the job's status agree.
  if (temporalCancellation) throw temporalCancellation;
  return result;
}
