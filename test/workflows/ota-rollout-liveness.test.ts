// otaRollout liveness against the real Temporal server, the activities replaced by fakes that keep the rollout's
// counts in memory: a dispatched job with no report is sent again after the silence bound, each further resend
// after twice the wait (backoff), a report resets the wait, and a paused rollout sends nothing.
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { bundleWorkflowCode, Worker, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import type { OtaRolloutActivities } from '../../activities/mqtt/ota-rollout';
import { otaRollout } from '../../workflows/ota-rollout';
import { pauseRolloutSignal, rolloutEventsSignal, rolloutWorkflowId, type OtaRolloutInput, type WaveCounts } from '../../workflows/ota-rollout-contract';
import { cfg, eventually, uniqueId } from '../helpers';

let env: TestWorkflowEnvironment;
let bundle: WorkflowBundleWithSourceMap;

beforeAll(async () => {
  env = await TestWorkflowEnvironment.createFromExistingServer({ address: cfg.temporal.address, namespace: cfg.temporal.namespace });
  bundle = await bundleWorkflowCode({ workflowsPath: require.resolve('../../workflows') });
}, 120000);
afterAll(async () => {
  await env?.teardown();
});

/** One wave of `robots` jobs, all dispatched by the first batch; terminal reports move them to COMPLETED. */
function fakes(robots: number) {
  let completed = 0;
  const resends: number[] = [];
  const counts = (): WaveCounts[] => [{ size: robots, status: { COMPLETED: completed, PENDING: robots - completed }, queued: 0, awaitingRobot: 0, inFlight: robots - completed }];
  const activities: Pick<OtaRolloutActivities, 'createRolloutJobs' | 'dispatchRolloutBatch' | 'applyRolloutEvents' | 'endRolloutJobs' | 'setRolloutState' | 'resendInFlight'> = {
    async createRolloutJobs() {
      return { jobs: robots, created: robots };
    },
    async dispatchRolloutBatch() {
      return { dispatched: robots, awaitingRobot: 0, counts: counts(), moved: false };
    },
    async applyRolloutEvents(_id, events) {
      completed += events.reports.filter((r) => r.status === 'COMPLETED').length;
      return counts();
    },
    async endRolloutJobs() {
      return counts();
    },
    async setRolloutState() {},
    async resendInFlight() {
      resends.push(Date.now());
      return counts();
    },
  };
  return { activities, resends };
}

function input(redispatchAfterMs: number): OtaRolloutInput {
  return {
    rolloutId: uniqueId('liveness'),
    options: { wavePercents: [100], successThresholdPct: 100, maxConcurrency: 10, abortAfterFailures: null, abortAfterFailurePct: null, deadlineMs: null, redispatchAfterMs },
  };
}

async function run(fake: ReturnType<typeof fakes>, body: (start: (i: OtaRolloutInput) => Promise<import('@temporalio/client').WorkflowHandle<typeof otaRollout>>) => Promise<void>) {
  const taskQueue = uniqueId('rollout-liveness');
  const worker = await Worker.create({ connection: env.nativeConnection, namespace: cfg.temporal.namespace, taskQueue, workflowBundle: bundle, activities: fake.activities });
  await worker.runUntil(body((i) => env.client.workflow.start(otaRollout, { taskQueue, workflowId: rolloutWorkflowId(i.rolloutId), args: [i] })));
}

const report = (jobId: string) => ({ reports: [{ jobId, robotId: `r-${jobId}`, status: 'COMPLETED' as const, error_msg: null }], online: [] });

test('a job in flight with no report is sent again after the bound, then with backoff; a report resets the wait', async () => {
  const fake = fakes(2);
  await run(fake, async (start) => {
    const h = await start(input(1000));
    const t0 = Date.now();
    await eventually('three resends', async () => fake.resends.length >= 3, 20000);
    const gaps = [fake.resends[0] - t0, fake.resends[1] - fake.resends[0], fake.resends[2] - fake.resends[1]];
    // 1 s, then 2 s, then 4 s of silence (timers fire on the server: some slack, never early).
    expect(gaps[0]).toBeGreaterThanOrEqual(900);
    expect(gaps[1]).toBeGreaterThanOrEqual(1900);
    expect(gaps[2]).toBeGreaterThanOrEqual(3900);

    // A report resets the wait to the bound: the next resend comes about 1 s later, not 8 s.
    await h.signal(rolloutEventsSignal, report('a'));
    const before = fake.resends.length;
    const reportedAt = Date.now();
    await eventually('resend after the reset', async () => fake.resends.length > before, 6000);
    expect(fake.resends[before] - reportedAt).toBeLessThan(4000);

    await h.signal(rolloutEventsSignal, report('b'));
    expect((await h.result()).status).toBe('COMPLETED');
    // Cheap: a resend is one activity, not one per robot.
    const { historyLength } = await h.describe();
    expect(historyLength).toBeLessThan(120);
  });
}, 60000);

test('a paused rollout sends nothing again', async () => {
  const fake = fakes(1);
  await run(fake, async (start) => {
    const h = await start(input(1000));
    await h.signal(pauseRolloutSignal);
    const pausedAt = fake.resends.length;
    await new Promise((r) => setTimeout(r, 3500));
    expect(fake.resends.length - pausedAt).toBe(0);
    await h.signal(rolloutEventsSignal, report('a'));
    expect((await h.result()).status).toBe('COMPLETED');
  });
}, 60000);
