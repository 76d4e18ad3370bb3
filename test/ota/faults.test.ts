// Faults in the middle of a deployment: the broker restarts (cleanly, then SIGKILLed), the bridge, the worker
// and the API are SIGKILLed and restarted, the daemon is SIGKILLed during a large download. Each job still ends COMPLETED with the exact bytes
// on the robot; the daemon's resumed download fetches only the bytes it did not have.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { restartServer } from '../../infra/stack';
import { cfg, eventually, sha256File, testRobots, type ChildHandle } from '../helpers';
import { daemonLogLines, deployFromS3, jobState, startOtaSystem, uploadFile, waitForJob, type OtaSystem } from './system';

let sys: OtaSystem;
const robot = testRobots()[2];
const SIZE = 48 * 1024 * 1024;
// A capped link (a real daemon option) makes each download last ~4 s, long enough to fault it mid-flight.
const RATE = 12 * 1024 * 1024;
let object: string;
let sha: string;

beforeAll(async () => {
  sys = await startOtaSystem({ daemonsFor: [] });
  await sys.startDaemon(robot, { max_download_bytes_per_s: RATE });
  const bytes = crypto.randomBytes(SIZE);
  sha = crypto.createHash('sha256').update(bytes).digest('hex');
  object = await uploadFile(sys, 'large.bin', bytes);
}, 180000);
afterAll(async () => {
  await sys?.stop();
});

async function deployAndWaitDownloading(name: string): Promise<{ jobId: string; target: string }> {
  const target = path.join(robot.root, 'faults', `${name}-${Date.now()}.bin`);
  const jobId = await deployFromS3(sys, object, robot.id, target);
  // Mid-flight: the robot holds part of the file, and job_state says so (a batched single job's intermediate
  // status is a progress row the bridge inserted: activities/db/ota-job-progress.ts), as the reference's did.
  const downloading = eventually('job_state DOWNLOADING', async () => (await jobState(sys, jobId)).status === 'DOWNLOADING', 20000);
  await eventually('download under way', async () => fs.existsSync(`${target}.part`) && fs.statSync(`${target}.part`).size > 4 * 1024 * 1024, 20000);
  await downloading;
  return { jobId, target };
}

test('the broker restarts mid-download: the job completes and the file is intact', async () => {
  const { jobId, target } = await deployAndWaitDownloading('broker');
  // The job list sees the same status, by its status filter too (the job's document still says PENDING).
  const listed = async (q: string) => ((await (await sys.call(`/jobs?robot_id=${robot.id}${q}`)).json()) as { jobs: Array<{ job_id: string; status: string }> }).jobs;
  expect((await listed('&status=DOWNLOADING')).map((j) => j.job_id)).toContain(jobId);
  expect((await listed('&status=PENDING')).map((j) => j.job_id)).not.toContain(jobId);
  expect((await listed('')).find((j) => j.job_id === jobId)?.status).toBe('DOWNLOADING');
  await restartServer(cfg, 'mosquitto');
  const done = await waitForJob(sys, jobId, ['COMPLETED', 'FAILED'], 60000);
  expect(done.status).toBe('COMPLETED');
  expect(sha256File(target)).toBe(sha);
});

test('the broker is SIGKILLed mid-download and restarted: the job completes and the file is intact', async () => {
  const { jobId, target } = await deployAndWaitDownloading('broker-kill');
  await restartServer(cfg, 'mosquitto', true);
  const done = await waitForJob(sys, jobId, ['COMPLETED', 'FAILED'], 60000);
  expect(done.status).toBe('COMPLETED');
  expect(sha256File(target)).toBe(sha);
});

test('the MQTT bridge is SIGKILLed mid-download: reports wait in its session and the job completes', async () => {
  const { jobId, target } = await deployAndWaitDownloading('bridge');
  await sys.bridge.kill('SIGKILL');
  // The download finishes while no bridge runs: the COMPLETED report is queued at the broker.
  await eventually('file installed', async () => fs.existsSync(target), 30000);
  await sys.startBridge();
  const done = await waitForJob(sys, jobId, ['COMPLETED', 'FAILED'], 60000);
  expect(done.status).toBe('COMPLETED');
  expect(sha256File(target)).toBe(sha);
});

test('the worker is SIGKILLed mid-download: a new worker finishes the job', async () => {
  const { jobId, target } = await deployAndWaitDownloading('worker');
  await sys.worker.kill('SIGKILL');
  await sys.startWorker();
  const done = await waitForJob(sys, jobId, ['COMPLETED', 'FAILED'], 60000);
  expect(done.status).toBe('COMPLETED');
  expect(sha256File(target)).toBe(sha);
});

test('the API is SIGKILLed and restarted mid-download: the job completes and job_state answers from the database', async () => {
  const { jobId, target } = await deployAndWaitDownloading('api');
  await sys.api.kill('SIGKILL');
  await sys.startApi();
  const done = await waitForJob(sys, jobId, ['COMPLETED', 'FAILED'], 60000);
  expect(done.status).toBe('COMPLETED');
  expect(sha256File(target)).toBe(sha);
});

test('the daemon is SIGKILLed during a large download: restarted, it fetches only the remaining bytes', async () => {
  const { jobId, target } = await deployAndWaitDownloading('daemon');
  await eventually('half downloaded', async () => fs.statSync(`${target}.part`).size > SIZE / 3, 20000);
  await sys.daemons.get(robot.id)!.kill('SIGKILL');
  const heldAtKill = fs.statSync(`${target}.part`).size;
  expect(heldAtKill).toBeLessThan(SIZE);
  expect(fs.existsSync(target)).toBe(false); // nothing installed half-way

  const restarted = await sys.startDaemon(robot, { max_download_bytes_per_s: RATE });
  const done = await waitForJob(sys, jobId, ['COMPLETED', 'FAILED'], 60000);
  expect(done.status).toBe('COMPLETED');
  expect(sha256File(target)).toBe(sha);
  expect(fs.existsSync(`${target}.part`)).toBe(false);
  const [completed] = daemonLogLines(restarted, 'job completed').filter((l) => l.job_id === jobId);
  expect(completed).toBeDefined();
  const resumedFrom = completed.resumed_from as number;
  expect(resumedFrom).toBeGreaterThan(0);
  expect(resumedFrom).toBeLessThanOrEqual(heldAtKill);
  expect(completed.fetched).toBe(SIZE - resumedFrom);
});

// Batched single deploys (api/ota/deploy-batcher.ts): a burst of deploys stored and started per batch.
describe('a batch of single deploys', () => {
  const SMALL = crypto.randomBytes(64 * 1024);
  const smallSha = crypto.createHash('sha256').update(SMALL).digest('hex');
  const robots = [robot, testRobots()[0], testRobots()[1]];
  let small: string;
  beforeAll(async () => {
    for (const r of robots.slice(1)) await sys.startDaemon(r);
    small = await uploadFile(sys, 'small.bin', SMALL);
  }, 60000);

  /** `n` deploys of the small file at once, over the robots; each settles with its job id or its failure. */
  function burst(name: string, n: number) {
    const dir = `faults-${name}-${Date.now()}`;
    const targets = Array.from({ length: n }, (_, i) => path.join(robots[i % robots.length].root, dir, `f${i}.bin`));
    const replies = targets.map((t, i) => deployFromS3(sys, small, robots[i % robots.length].id, t));
    return { dir, targets, replies: Promise.allSettled(replies) };
  }

  /** Kills `child` with SIGKILL the moment its output has `line` (no polling delay: the work is still in flight). */
  function killOn(child: ChildHandle, line: string): Promise<void> {
    return new Promise((resolve) => {
      const onData = (d: Buffer) => {
        if (!d.toString().includes(line)) return;
        child.proc.stdout!.off('data', onData);
        child.proc.kill('SIGKILL');
        resolve();
      };
      child.proc.stdout!.on('data', onData);
    });
  }

  test('the API is SIGKILLed while a batch is being stored: every acknowledged job completes, no job is left half-created', async () => {
    const killed = killOn(sys.api, 'deploy batch storing');
    const { dir, targets, replies } = burst('api-batch', 12);
    await killed;
    const settled = await replies;
    const acked = settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
    // Stored jobs of unanswered requests have no workflow until the restarted API's reconciler starts their batch
    // (past a grace period, shortened here; its first pass runs at boot).
    sys.env.OTA_RECONCILE_GRACE = '1s';
    try {
      await new Promise((r) => setTimeout(r, 1500));
      await sys.startApi();
    } finally {
      delete sys.env.OTA_RECONCILE_GRACE;
    }
    const stored = await sys.db.models.OtaJob.find({ deploy_path: { $regex: dir } }, { _id: 1, deploy_path: 1 }).lean();
    expect(stored.map((j) => j._id)).toEqual(expect.arrayContaining(acked));
    // Every job that exists ends COMPLETED with the exact bytes at its path: acknowledged or not, none stays PENDING.
    for (const j of stored) expect((await waitForJob(sys, j._id, ['COMPLETED', 'FAILED', 'CANCELED'], 60000)).status).toBe('COMPLETED');
    for (const j of stored) expect(sha256File(j.deploy_path)).toBe(smallSha);
    expect(targets.filter((t) => fs.existsSync(t)).length).toBe(stored.length);
  });

  test("the API gets SIGTERM right after answering a deploy: the deploy's audit entry is stored before it exits", async () => {
    // The audit trail gathers entries for 50 ms before one insert (api/audit.ts); shutdown must store them first.
    const target = path.join(robot.root, `faults-audit-${Date.now()}`, 'f.bin');
    const jobId = await deployFromS3(sys, small, robot.id, target);
    await sys.api.kill('SIGTERM');
    expect(sys.api.proc.exitCode).toBe(0);
    const entries = await sys.db.models.AuditEntry.find({ 'params.job_ids': jobId }).lean();
    expect(entries).toHaveLength(1);
    expect(entries[0]).toMatchObject({ method: 'POST', route: '/api/v1/file/deploy_from_s3', status: 200, params: { robot_id: robot.id } });
    await sys.startApi();
    expect((await waitForJob(sys, jobId, ['COMPLETED', 'FAILED', 'CANCELED'], 60000)).status).toBe('COMPLETED');
    expect(sha256File(target)).toBe(smallSha);
  });

  test("the worker is SIGKILLed while a batch's dispatch activity runs: a new worker finishes every job", async () => {
    const killed = killOn(sys.worker, 'rollout batch publishing');
    const { targets, replies } = burst('worker-batch', 9);
    const ids = (await replies).map((s) => {
      if (s.status !== 'fulfilled') throw s.reason;
      return s.value;
    });
    await killed;
    await sys.startWorker();
    for (const id of ids) expect((await waitForJob(sys, id, ['COMPLETED', 'FAILED', 'CANCELED'], 60000)).status).toBe('COMPLETED');
    for (const t of targets) expect(sha256File(t)).toBe(smallSha);
  });
});
