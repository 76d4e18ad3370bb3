// A robot that floods its state topic (its own credential, the robots' listener) with reports of its own job,
// each with a new progress value, does not hold up another robot's job: the bridge drops what is over the
// per-robot rate limit before parsing it, so the flood neither reaches the database nor Temporal (each report
// that got through would be a signal in the flooder's job history).
import crypto from 'node:crypto';
import path from 'node:path';
import { topics } from '../../common/protocol';
import { temporalClient, testRobots } from '../helpers';
import { connectAsRobot, deployFromS3, startOtaSystem, uploadFile, waitForJob, type OtaSystem } from './system';

let sys: OtaSystem;
const [flooder, victim] = testRobots();

beforeAll(async () => {
  sys = await startOtaSystem({ daemonsFor: [victim] });
}, 180000);
afterAll(async () => {
  await sys?.stop();
});

async function timedJob(object: string, name: string): Promise<number> {
  const t0 = Date.now();
  const jobId = await deployFromS3(sys, object, victim.id, path.join(victim.root, 'flood', `${name}-${Date.now()}.bin`));
  const done = await waitForJob(sys, jobId, ['COMPLETED', 'FAILED'], 60000);
  expect(done.status).toBe('COMPLETED');
  return Date.now() - t0;
}

test("a flooding robot does not delay another robot's job", async () => {
  const object = await uploadFile(sys, 'flood.bin', crypto.randomBytes(100_000));
  const quiet = await timedJob(object, 'quiet');

  const robot = await connectAsRobot(flooder);
  try {
    // The flooder's own job (its daemon is not running, so the job waits): every report is valid and new.
    const floodJob = await deployFromS3(sys, object, flooder.id, path.join(flooder.root, 'flood', `own-${Date.now()}.bin`));
    const FLOOD = 5000;
    const flood = Promise.all(
      Array.from({ length: FLOOD }, (_, i) =>
        robot.publishAsync(topics.state(flooder.id), JSON.stringify({ [floodJob]: { status: 'PENDING', progress: i / 100 } }), { qos: 1 }),
      ),
    );
    await sys.bridge.waitForOutput('state messages over the per-robot rate limit dropped', 30000);
    const flooded = await timedJob(object, 'flooded');
    await flood;
    // The victim's job takes about as long as in a quiet system (the machine is shared: a generous margin).
    expect(flooded).toBeLessThan(quiet + 5000);
    const dropped = sys.bridge
      .output()
      .split('\n')
      .filter((l) => l.includes('over the per-robot rate limit') && l.includes(flooder.id));
    expect(dropped.length).toBeGreaterThan(0);
    // What got through is bounded by the limit (burst 40, then 20/s), not by the flood: the history of the
    // flooder's job's workflow (its batch's: api/ota/deploy-batcher.ts) holds a few hundred events at most, where
    // 5,000 signals would have made it thousands.
    const t = await temporalClient();
    try {
      const workflowId = (await sys.db.models.OtaJob.findById(floodJob).lean())!.workflow_id;
      const { historyLength } = await t.client.workflow.getHandle(workflowId).describe();
      expect(historyLength).toBeLessThan(FLOOD / 5);
    } finally {
      await t.close();
    }
  } finally {
    await robot.endAsync();
  }
});
