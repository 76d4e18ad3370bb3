// otaDeployment workflow logic against the real Temporal server (namespace `fleet`, JobState search attribute),
// with the activities replaced by recording fakes: what the workflow decides, stores and publishes, per scenario.
import { CancelledFailure, WorkflowFailedError, type WorkflowHandle } from '@temporalio/client';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { ApplicationFailure } from '@temporalio/common';
import { bundleWorkflowCode, Worker, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import type { OtaJobActivities } from '../../activities/db/ota-jobs';
import type { DispatchOutcome, OtaMqttActivities } from '../../activities/mqtt/ota';
import type { JobStatus } from '../../common/protocol';
import { otaDeployment, type OtaDeploymentCarry } from '../../workflows/ota-deployment';
import {
  cancelJobSignal,
  jobProgressQuery,
  otaWorkflowId,
  robotPresenceSignal,
  robotReportSignal,
  type OtaDeploymentInput,
} from '../../workflows/ota-contract';
import { JOB_STATE_SA, ROBOT_ID_SA } from '../../workflows/search-attributes';
import { cfg, eventually, uniqueId } from '../helpers';

let env: TestWorkflowEnvironment;
let bundle: WorkflowBundleWithSourceMap;

beforeAll(async () => {
  env = await TestWorkflowEnvironment.createFromExistingServer({ address: cfg.temporal.address, namespace: cfg.temporal.namespace });
  bundle = await bundleWorkflowCode({ workflowsPath: require.resolve('../../workflows') });
});

afterAll(async () => {
  await env?.teardown();
});

interface FakeOptions {
  /** Outcome of the n-th dispatch (1-based); default 'dispatched'. Throwing simulates an infrastructure outage. */
  dispatch?: (n: number) => Promise<DispatchOutcome>;
  /** Runs inside publishAck (e.g. to hold the workflow open after its terminal decision). */
  onAck?: () => Promise<void>;
}

/** Recording fakes of every activity the workflow uses; `calls` is the observable order of side effects. */
function fakeActivities(opts: FakeOptions = {}) {
  const calls: string[] = [];
  const records: { status: JobStatus; error_msg: string | null }[] = [];
  /** Per stored write: the statuses passed through on the way, stored with it. */
  const passed: JobStatus[][] = [];
  let dispatches = 0;
  const activities: OtaMqttActivities & OtaJobActivities = {
    async dispatchDeploy(_jobId, robotId, fields) {
      dispatches++;
      calls.push(fields ? `dispatch ${robotId} ${fields.s3_object_name}` : 'dispatch');
      return opts.dispatch ? opts.dispatch(dispatches) : 'dispatched';
    },
    async publishAck(robotId, jobId) {
      calls.push(`ack ${robotId} ${jobId}`);
      await opts.onAck?.();
    },
    async publishCancel(robotId, jobId) {
      calls.push(`cancel ${robotId} ${jobId}`);
    },
    async recordJobStatus(_jobId, status, error_msg, passedThrough = []) {
      calls.push(`record ${status}`);
      records.push({ status, error_msg });
      passed.push(passedThrough);
      return { applied: true, current: status };
    },
    // As the real one: store, then cancel (cloud-ended jobs), then ack.
    async finishJob(jobId, robotId, status, error_msg, passedThrough) {
      const stored = await activities.recordJobStatus(jobId, status, error_msg, passedThrough);
      if (status === 'CANCELED' || status === 'TIMED_OUT') await activities.publishCancel(robotId, jobId);
      await activities.publishAck(robotId, jobId);
      return stored;
    },
  };
  return { activities, calls, records, passed, dispatchCount: () => dispatches };
}

async function withWorker<T>(activities: object, body: (taskQueue: string) => Promise<T>): Promise<T> {
  const taskQueue = uniqueId('ota-wf');
  const worker = await Worker.create({
    connection: env.nativeConnection,
    namespace: cfg.temporal.namespace,
    taskQueue,
    workflowBundle: bundle,
    activities,
  });
  return worker.runUntil(body(taskQueue));
}

function start(taskQueue: string, input: Partial<OtaDeploymentInput> = {}, carry?: OtaDeploymentCarry) {
  const jobId = uniqueId('job');
  const full: OtaDeploymentInput = { jobId, robotId: 'robot-wf-test', ...input };
  return env.client.workflow.start(otaDeployment, {
    taskQueue,
    workflowId: otaWorkflowId(full.jobId),
    args: carry ? [full, carry] : [full],
    // As the API starts it: the operator-facing search attributes are set from the first event.
    typedSearchAttributes: [
      { key: ROBOT_ID_SA, value: full.robotId },
      { key: JOB_STATE_SA, value: 'PENDING' },
    ],
  });
}

const progress = (h: WorkflowHandle<typeof otaDeployment>) => h.query(jobProgressQuery);
const jobState = async (h: WorkflowHandle<typeof otaDeployment>) => (await h.describe()).typedSearchAttributes.get(JOB_STATE_SA);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('offline robot: waits without polling, re-dispatches on presence, follows reports to COMPLETED', async () => {
  const fake = fakeActivities({ dispatch: async (n) => (n === 1 ? 'robot_offline' : 'dispatched') });
  await withWorker(fake.activities, async (tq) => {
    const h = await start(tq);
    await eventually('first dispatch', async () => fake.dispatchCount() === 1);
    expect(await progress(h)).toEqual({ status: 'PENDING', progress: null, error_msg: null, robotOnline: false, dispatches: 0 });

    // No polling: time passes, nothing is dispatched again and no timer is ever started.
    await sleep(1500);
    expect(fake.dispatchCount()).toBe(1);
    const history = await h.fetchHistory();
    expect(history.events?.some((e) => e.timerStartedEventAttributes)).toBe(false);

    await h.signal(robotPresenceSignal, { online: true });
    await eventually('re-dispatch', async () => (await progress(h)).dispatches === 1);
    expect(fake.dispatchCount()).toBe(2);
    expect((await progress(h)).robotOnline).toBe(true);

    await h.signal(robotReportSignal, { status: 'RECEIVED', error_msg: null });
    await h.signal(robotReportSignal, { status: 'DOWNLOADING', progress: 10 });
    await h.signal(robotReportSignal, { status: 'DOWNLOADING', progress: 55 });
    // Live progress comes from the query; progress ticks are not stored.
    await eventually('progress 55', async () => (await progress(h)).progress === 55);
    expect(await progress(h)).toMatchObject({ status: 'DOWNLOADING', progress: 55, robotOnline: true, dispatches: 1 });
    // Lean run: nothing is stored (no write, no JobState upsert) until the job is decided.
    expect(fake.records).toEqual([]);
    expect(await jobState(h)).toBe('PENDING');

    await h.signal(robotReportSignal, { status: 'COMPLETED', error_msg: null });
    const result = await h.result();
    expect(result).toEqual({ jobId: h.workflowId.replace('ota-job-', ''), status: 'COMPLETED', error_msg: null, dispatches: 1 });
    // One write at the end, which keeps every state change the job went through.
    expect(fake.records.map((r) => r.status)).toEqual(['COMPLETED']);
    expect(fake.passed).toEqual([['RECEIVED', 'DOWNLOADING']]);
    expect(fake.calls.filter((c) => c.startsWith('cancel'))).toEqual([]);
    // Stored first, then acked, exactly once.
    expect(fake.calls.slice(-2)).toEqual(['record COMPLETED', `ack robot-wf-test ${result.jobId}`]);
    expect(await jobState(h)).toBe('COMPLETED');
  });
});

test('out-of-order and after-terminal reports are ignored; FAILED keeps the robot error', async () => {
  let releaseAck!: () => void;
  const ackHeld = new Promise<void>((r) => (releaseAck = r));
  const fake = fakeActivities({ onAck: () => ackHeld });
  await withWorker(fake.activities, async (tq) => {
    const h = await start(tq);
    await eventually('dispatched', async () => (await progress(h)).dispatches === 1);
    await h.signal(robotReportSignal, { status: 'DOWNLOADING', progress: 20 });
    await h.signal(robotReportSignal, { status: 'RECEIVED' }); // late: must not move the job back
    await h.signal(robotReportSignal, { status: 'PENDING' });
    await eventually('DOWNLOADING', async () => (await progress(h)).status === 'DOWNLOADING');
    expect((await progress(h)).status).toBe('DOWNLOADING');

    await h.signal(robotReportSignal, { status: 'FAILED', error_msg: 'disk full' });
    // The ack is held, so the workflow is still open: reports after the terminal decision must change nothing.
    await eventually('ack started', async () => fake.calls.some((c) => c.startsWith('ack')));
    await h.signal(robotReportSignal, { status: 'COMPLETED', error_msg: null });
    await h.signal(robotReportSignal, { status: 'DOWNLOADING', progress: 99 });
    await sleep(300);
    expect(await progress(h)).toMatchObject({ status: 'FAILED', error_msg: 'disk full', progress: 20 });
    releaseAck();

    const result = await h.result();
    expect(result).toMatchObject({ status: 'FAILED', error_msg: 'disk full', dispatches: 1 });
    expect(fake.records).toEqual([{ status: 'FAILED', error_msg: 'disk full' }]);
    expect(fake.passed).toEqual([['DOWNLOADING']]);
    expect(fake.calls.filter((c) => c.startsWith('cancel'))).toEqual([]);
  });
});

test('a job costs two local activities and one JobState upsert: dispatch, then one finishJob that stores, then acks', async () => {
  const fake = fakeActivities();
  await withWorker(fake.activities, async (tq) => {
    const h = await start(tq, { robotId: 'robot-batch' });
    await eventually('dispatched', async () => (await progress(h)).dispatches === 1);
    await h.signal(robotReportSignal, { status: 'RECEIVED' });
    await h.signal(robotReportSignal, { status: 'DOWNLOADING', progress: 30 });
    await eventually('DOWNLOADING decided', async () => (await progress(h)).status === 'DOWNLOADING');
    await h.signal(robotReportSignal, { status: 'DOWNLOADING', progress: 90 });
    await h.signal(robotReportSignal, { status: 'COMPLETED' });

    const result = await h.result();
    expect(result).toMatchObject({ status: 'COMPLETED', dispatches: 1 });
    expect(fake.records.map((r) => r.status)).toEqual(['COMPLETED']);
    expect(fake.passed).toEqual([['RECEIVED', 'DOWNLOADING']]);
    expect(fake.calls.slice(-2)).toEqual(['record COMPLETED', `ack robot-batch ${result.jobId}`]);
    const events = (await h.fetchHistory()).events ?? [];
    // JobState upserts only (the SDK records workflow-versioning markers as a search attribute too).
    const upserts = events.filter((e) => e.upsertWorkflowSearchAttributesEventAttributes?.searchAttributes?.indexedFields?.[JOB_STATE_SA.name]).length;
    const activities = events.map((e) => e.activityTaskScheduledEventAttributes?.activityType?.name).filter(Boolean);
    // dispatchDeploy and finishJob run as local activities: a marker each, no activity task (no extra workflow task).
    const localActivities = events.filter((e) => e.markerRecordedEventAttributes?.markerName === 'core_local_activity').length;
    expect({ upserts, activities, localActivities }).toEqual({ upserts: 1, activities: [], localActivities: 2 });
    expect(await jobState(h)).toBe('COMPLETED');
  });
});

test('reports decided before the first write (robot faster than the dispatch reply) cost one write', async () => {
  let releaseDispatch!: () => void;
  const dispatchHeld = new Promise<void>((r) => (releaseDispatch = r));
  const fake = fakeActivities({
    dispatch: async () => {
      await dispatchHeld;
      return 'dispatched';
    },
  });
  await withWorker(fake.activities, async (tq) => {
    const h = await start(tq, { robotId: 'robot-fast' });
    await eventually('dispatch in flight', async () => fake.dispatchCount() === 1);
    // The daemon got the message and finished before the dispatch activity reported back.
    await h.signal(robotReportSignal, { status: 'RECEIVED' });
    await h.signal(robotReportSignal, { status: 'DOWNLOADING', progress: 50 });
    await h.signal(robotReportSignal, { status: 'COMPLETED' });
    const result = await h.result();
    releaseDispatch();
    expect(result).toMatchObject({ status: 'COMPLETED', error_msg: null });
    expect(fake.records).toEqual([{ status: 'COMPLETED', error_msg: null }]);
    expect(fake.calls.filter((c) => !c.startsWith('dispatch'))).toEqual(['record COMPLETED', `ack robot-fast ${result.jobId}`]);
    expect(await jobState(h)).toBe('COMPLETED');
  });
});

test('cancel signal: CANCELED is stored, then the robot is told to abort, then acked', async () => {
  const fake = fakeActivities();
  await withWorker(fake.activities, async (tq) => {
    const h = await start(tq, { robotId: 'robot-cancel' });
    await eventually('dispatched', async () => (await progress(h)).dispatches === 1);
    await h.signal(robotReportSignal, { status: 'RECEIVED' });
    // Stored before the cancel is sent: transitions decided together would be stored as the latest only.
    await eventually('RECEIVED decided', async () => (await progress(h)).status === 'RECEIVED');
    await h.signal(cancelJobSignal, { reason: 'wrong file' });
    const result = await h.result();
    expect(result).toMatchObject({ status: 'CANCELED', error_msg: 'canceled: wrong file' });
    const jobId = result.jobId;
    expect(fake.calls).toEqual(['dispatch', 'record CANCELED', `cancel robot-cancel ${jobId}`, `ack robot-cancel ${jobId}`]);
    expect(fake.passed).toEqual([['RECEIVED']]);
    expect(await jobState(h)).toBe('CANCELED');
  });
});

test('Temporal cancellation request: job CANCELED, robot told, workflow ends Canceled', async () => {
  const fake = fakeActivities({ dispatch: async () => 'robot_offline' });
  await withWorker(fake.activities, async (tq) => {
    const h = await start(tq, { robotId: 'robot-tcancel' });
    await eventually('first dispatch', async () => fake.dispatchCount() === 1);
    await h.cancel();
    const err = await h.result().then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(WorkflowFailedError);
    expect((err as WorkflowFailedError).cause).toBeInstanceOf(CancelledFailure);
    expect((await h.describe()).status.name).toBe('CANCELLED');
    expect(fake.records).toEqual([{ status: 'CANCELED', error_msg: 'canceled: Temporal cancellation request' }]);
    expect(fake.calls.slice(1).map((c) => c.split(' ')[0])).toEqual(['record', 'cancel', 'ack']);
    expect(await jobState(h)).toBe('CANCELED');
  });
});

test('a cancel is honoured while a dispatch keeps failing (infrastructure outage)', async () => {
  const fake = fakeActivities({
    dispatch: async () => {
      throw new Error('broker unreachable');
    },
  });
  await withWorker(fake.activities, async (tq) => {
    const h = await start(tq);
    await eventually('dispatch attempted', async () => fake.dispatchCount() >= 1);
    await h.signal(cancelJobSignal, {});
    const result = await h.result();
    expect(result).toMatchObject({ status: 'CANCELED', error_msg: 'canceled by operator', dispatches: 0 });
    expect(fake.records.map((r) => r.status)).toEqual(['CANCELED']);
    expect(fake.calls.filter((c) => !c.startsWith('dispatch')).map((c) => c.split(' ')[0])).toEqual(['record', 'cancel', 'ack']);
  });
});

test('timeout: a job not finished in time ends TIMED_OUT and the robot is told to abort', async () => {
  const fake = fakeActivities({ dispatch: async () => 'robot_offline' });
  await withWorker(fake.activities, async (tq) => {
    const started = Date.now();
    const h = await start(tq, { robotId: 'robot-slow', timeoutSeconds: 2 });
    const result = await h.result();
    expect(Date.now() - started).toBeGreaterThanOrEqual(1900);
    expect(result).toMatchObject({ status: 'TIMED_OUT', error_msg: 'not finished within 2 s', dispatches: 0 });
    expect(fake.calls).toEqual(['dispatch', 'record TIMED_OUT', `cancel robot-slow ${result.jobId}`, `ack robot-slow ${result.jobId}`]);
  });
});

test('robot drops offline mid-job: no re-dispatch until it is back online, then exactly one', async () => {
  const fake = fakeActivities();
  await withWorker(fake.activities, async (tq) => {
    const h = await start(tq);
    await eventually('dispatched', async () => (await progress(h)).dispatches === 1);
    await h.signal(robotReportSignal, { status: 'DOWNLOADING', progress: 30 });
    await h.signal(robotPresenceSignal, { online: false });
    await eventually('offline seen', async () => (await progress(h)).robotOnline === false);
    await sleep(500);
    expect(fake.dispatchCount()).toBe(1);

    await h.signal(robotPresenceSignal, { online: true });
    await eventually('re-dispatched', async () => (await progress(h)).dispatches === 2);
    await h.signal(robotReportSignal, { status: 'COMPLETED' });
    const result = await h.result();
    expect(result).toMatchObject({ status: 'COMPLETED', dispatches: 2 });
    expect(fake.dispatchCount()).toBe(2);
    expect(fake.records.map((r) => r.status)).toEqual(['COMPLETED']);
    expect(fake.passed).toEqual([['DOWNLOADING']]);
  });
});

test('robot reconnects while the job is followed (its deploy message may be lost): the job is sent again, once', async () => {
  const fake = fakeActivities();
  await withWorker(fake.activities, async (tq) => {
    const h = await start(tq);
    await eventually('dispatched', async () => (await progress(h)).dispatches === 1);
    await sleep(300);
    expect(fake.dispatchCount()).toBe(1); // no report yet, no reason to re-send on its own

    // The broker restarted and lost the queued message; the robot reconnects and says "online".
    await h.signal(robotPresenceSignal, { online: true });
    await eventually('re-dispatched', async () => (await progress(h)).dispatches === 2);
    await h.signal(robotReportSignal, { status: 'COMPLETED' });
    expect(await h.result()).toMatchObject({ status: 'COMPLETED', dispatches: 2 });
    expect(fake.dispatchCount()).toBe(2);
  });
});

test('a continued run (continue-as-new carry) resumes where its predecessor stopped', async () => {
  const fake = fakeActivities();
  await withWorker(fake.activities, async (tq) => {
    const carry: OtaDeploymentCarry = {
      phase: 'follow',
      status: 'DOWNLOADING',
      progress: 70,
      error_msg: null,
      robotOnline: true,
      dispatches: 3,
      deadlineMs: null,
      unrecorded: [],
    };
    const h = await start(tq, {}, carry);
    const first = await eventually('first query', () => progress(h));
    expect(first).toEqual({ status: 'DOWNLOADING', progress: 70, error_msg: null, robotOnline: true, dispatches: 3 });
    await h.signal(robotReportSignal, { status: 'COMPLETED' });
    const result = await h.result();
    expect(result).toMatchObject({ status: 'COMPLETED', dispatches: 3 });
    // Already dispatched and DOWNLOADING stored by the predecessor: neither is repeated.
    expect(fake.dispatchCount()).toBe(0);
    expect(fake.records.map((r) => r.status)).toEqual(['COMPLETED']);
  });
});

/**
 * `n` DOWNLOADING reports with progress counting up from `from` (mod 100), sent 10 at a time: a robot's reports and
 * the bridge's forwards overlap like this, landing while workflow tasks are in flight.
 */
async function reportBurst(h: WorkflowHandle, from: number, n: number): Promise<void> {
  for (let i = 0; i < n; i += 10) {
    await Promise.all(Array.from({ length: Math.min(10, n - i) }, (_, k) => h.signal(robotReportSignal, { status: 'DOWNLOADING', progress: (from + i + k) % 100 })));
  }
}

test('a followed job replays from its history (its patch markers sit where the code asks for them)', async () => {
  // A worker restart, or a workflow evicted from the worker's cache, replays the history: a patch asked for after
  // a local activity must not meet its marker before the code gets there (nondeterminism, the job stuck).
  const fake = fakeActivities();
  await withWorker(fake.activities, async (tq) => {
    const h = await start(tq, { robotId: 'robot-replay' });
    await eventually('dispatched', async () => (await progress(h)).dispatches === 1);
    await h.signal(robotReportSignal, { status: 'DOWNLOADING', progress: 10 });
    await eventually('downloading', async () => (await progress(h)).status === 'DOWNLOADING');
    // Reports landing while workflow tasks are in flight (the worker completes tasks the server then refuses).
    await reportBurst(h, 10, 200);
    await h.signal(robotReportSignal, { status: 'COMPLETED' });
    await h.result();
    await Worker.runReplayHistory({ workflowBundle: bundle }, await h.fetchHistory(), h.workflowId);
  });
});

test('a long chatty wait continues as new instead of growing one history', async () => {
  const fake = fakeActivities();
  await withWorker(fake.activities, async (tq) => {
    const h = await start(tq, { robotId: 'robot-chatty' });
    await eventually('dispatched', async () => (await progress(h)).dispatches === 1);
    await h.signal(robotReportSignal, { status: 'DOWNLOADING', progress: 0 });
    const latest = env.client.workflow.getHandle(h.workflowId);
    // Each progress signal costs 1-4 events (the fewer, the more signals one workflow task takes in: on a quiet
    // machine they batch well); the server suggests continue-as-new at 4,096 events. Up to 12,000 reports, 100
    // between looks at the run.
    let continued = false;
    for (let sent = 0; sent < 12000 && !continued; sent += 100) {
      await reportBurst(h, sent, 100);
      const run = await latest.describe();
      continued = run.runId !== h.firstExecutionRunId;
      // Past the suggestion the run continues as new at its next workflow task (the server suggests it when a task
      // starts). A stream that never pauses can starve that task on a loaded machine (the server refuses each
      // completion for the signals that landed meanwhile) until the per-run signal cap refuses the sends. The
      // bridge rate-limits a robot's reports: here, past the suggestion, the robot slows to one report per look.
      if (!continued && run.historyLength >= 4096) {
        continued = await eventually(
          'continued as new',
          async () => {
            await latest.signal(robotReportSignal, { status: 'DOWNLOADING', progress: sent % 100 });
            return (await latest.describe()).runId !== h.firstExecutionRunId;
          },
          60_000,
        );
      }
    }
    expect(continued).toBe(true);
    const before = await latest.describe();
    expect(before.historyLength).toBeLessThan(4096);
    // The new run kept the job's state: no re-dispatch, no repeated DOWNLOADING write, progress still served.
    expect(await progress(latest)).toMatchObject({ status: 'DOWNLOADING', robotOnline: true, dispatches: 1 });
    await h.signal(robotReportSignal, { status: 'COMPLETED' });
    const result = await h.result(); // follows the continue-as-new chain
    expect(result).toMatchObject({ status: 'COMPLETED', dispatches: 1 });
    expect(fake.dispatchCount()).toBe(1);
    // DOWNLOADING, decided in the first run, travelled with the carry and is stored with COMPLETED.
    expect(fake.records.map((r) => r.status)).toEqual(['COMPLETED']);
    expect(fake.passed).toEqual([['DOWNLOADING']]);
    expect(fake.calls.filter((c) => c.startsWith('ack'))).toHaveLength(1);
  });
}, 300_000);

test('liveness: a job the robot stays silent on is dispatched again, waiting twice as long each time, until it reports', async () => {
  const fake = fakeActivities();
  const at: number[] = [];
  const dispatch = fake.activities.dispatchDeploy;
  fake.activities.dispatchDeploy = async (jobId) => {
    at.push(Date.now());
    return dispatch(jobId);
  };
  await withWorker(fake.activities, async (tq) => {
    const h = await start(tq, { robotId: 'robot-silent', noReportRedispatchSeconds: 1 });
    // 1 s of silence, then 2 s: three dispatches after about 3 s.
    await eventually('third dispatch', async () => fake.dispatchCount() === 3, 15000);
    expect(at[1] - at[0]).toBeGreaterThanOrEqual(900);
    expect(at[2] - at[1]).toBeGreaterThanOrEqual(1900);
    // The robot answers: silence is no longer a reason to send it again.
    await h.signal(robotReportSignal, { status: 'RECEIVED' });
    await eventually('RECEIVED decided', async () => (await progress(h)).status === 'RECEIVED');
    await sleep(5000);
    expect(fake.dispatchCount()).toBe(3);
    await h.signal(robotReportSignal, { status: 'COMPLETED' });
    expect(await h.result()).toMatchObject({ status: 'COMPLETED', dispatches: 3 });
    // Each silent re-dispatch is a fresh dispatchDeploy (a fresh presigned URL), and nothing else was stored.
    expect(fake.records.map((r) => r.status)).toEqual(['COMPLETED']);
  });
}, 60_000);

test('a dispatch that fails for good (job missing) ends the job FAILED with the reason; the fields it carries reach the dispatch', async () => {
  const fake = fakeActivities({
    dispatch: async () => {
      throw ApplicationFailure.nonRetryable('OTA job x does not exist', 'OtaJobNotFound');
    },
  });
  await withWorker(fake.activities, async (tq) => {
    const job = { s3_bucket: 'files', s3_object_name: 'carried.bin', deploy_path: '/opt/x.bin', sha256: 'a'.repeat(64), size: 3 };
    const h = await start(tq, { robotId: 'robot-gone', job });
    const result = await h.result();
    expect(result).toMatchObject({ status: 'FAILED', error_msg: 'OTA job x does not exist', dispatches: 0 });
    expect(fake.calls[0]).toBe('dispatch robot-gone carried.bin');
    expect(fake.records).toEqual([{ status: 'FAILED', error_msg: 'OTA job x does not exist' }]);
  });
});
