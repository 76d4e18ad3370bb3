// The job archive (api/ota/archiver.ts), on the real servers: finished jobs leave `ota_jobs` for
// `ota_jobs_archive` and stay visible through job_state, /jobs (pagination across both) and cancel; the API
// process archives on its own; rollout jobs wait for their rollout; rollout counts include archived jobs.
import crypto from 'node:crypto';
import path from 'node:path';
import { findJob } from '../../activities/db/ota-jobs';
import { rolloutCounts } from '../../activities/db/ota-rollouts';
import { archiveFinishedJobs } from '../../api/ota/archiver';
import { DEFAULT_OPTIONS } from '../../api/ota/types';
import { buildJob } from '../../common/ota-job-doc';
import { cfg, eventually, testRobots, uniqueId } from '../helpers';
import { deployFromS3, jobState, startOtaSystem, uploadFile, waitForJob, type OtaSystem } from './system';

let sys: OtaSystem;
const robot = testRobots()[0];

beforeAll(async () => {
  sys = await startOtaSystem({ daemonsFor: [robot] });
});
afterAll(async () => {
  await sys?.stop();
});

const file = { s3_bucket: 'files', s3_object_name: 'archive-test.bin', file_name: 'a.bin', sha256: 'a'.repeat(64), size: 1 };

test('finished jobs move to the archive and stay visible through job_state, /jobs (paginated across both) and cancel', async () => {
  const object = await uploadFile(sys, 'archived.bin', crypto.randomBytes(4096));
  const ids: string[] = [];
  for (let i = 0; i < 2; i++) {
    const id = await deployFromS3(sys, object, robot.id, path.join(robot.root, `archived-${i}.bin`));
    await waitForJob(sys, id, ['COMPLETED'], 30000);
    ids.push(id);
  }
  // The API process's archiver moves them (default: terminal for 10 s, a pass every 5 s).
  await eventually(
    'both jobs archived',
    async () => (await sys.db.models.OtaJob.countDocuments({ _id: { $in: ids } })) === 0 && (await sys.db.models.OtaJobArchive.countDocuments({ _id: { $in: ids } })) === 2,
    60000,
  );
  for (const id of ids) expect(await jobState(sys, id)).toMatchObject({ job_id: id, status: 'COMPLETED', robot_id: robot.id, error_msg: null });
  // A job that still moves stays live: a PENDING job of the same robot, newer than both (a rollout's, so no
  // reconciler starts a workflow for it).
  const live = buildJob({ robotId: robot.id, deployPath: path.join(robot.root, 'live.bin'), file, timeoutS: null, deploymentId: uniqueId('no-rollout') }, new Date());
  await sys.db.models.OtaJob.create(live);
  const seen: string[] = [];
  let cursor: string | null = null;
  do {
    const res = await sys.call(`/jobs?robot_id=${robot.id}&limit=1${cursor ? `&cursor=${cursor}` : ''}`);
    expect(res.status).toBe(200);
    const body = (await res.json()) as { jobs: Array<{ job_id: string }>; next_cursor: string | null };
    expect(body.jobs).toHaveLength(1);
    seen.push(body.jobs[0].job_id);
    cursor = body.next_cursor;
  } while (cursor);
  // Newest first, each once, the live one and the archived ones in one order.
  expect(seen).toEqual([live._id, ids[1], ids[0]]);
  const cancel = await sys.call(`/job/${ids[0]}/cancel`, { method: 'POST' });
  expect(cancel.status).toBe(409);
  expect(((await cancel.json()) as { detail: string }).detail).toBe('Job is already COMPLETED.');
  expect(await sys.storedStatus(ids[1])).toBe('COMPLETED');
}, 120_000);

test('an archive pass moves only jobs terminal long enough; rollout jobs wait for their rollout; counts include the archive', async () => {
  const { models } = sys.db;
  const now = Date.now();
  const ago = (ms: number) => new Date(now - ms);
  const job = (status: string, finishedMsAgo: number | null, deploymentId?: string) => {
    const j = buildJob({ robotId: robot.id, deployPath: `/x/${uniqueId('p')}`, file, timeoutS: null, deploymentId }, ago(120_000));
    return { ...j, status, finished_at: finishedMsAgo === null ? null : ago(finishedMsAgo), updated_at: ago(finishedMsAgo ?? 60_000), wave: deploymentId ? 0 : undefined };
  };
  const running = uniqueId('rollout-running');
  const finished = uniqueId('rollout-finished');
  const rollout = (id: string, status: string) => ({
    _id: id, s3_bucket: 'files', s3_object_name: 'x', sha256: 'a'.repeat(64), size: 1, deploy_path: '/x', robot_ids: [robot.id], wave_sizes: [2],
    options: {}, status, timestamp: ago(120_000), updated_at: ago(60_000), finished_at: status === 'RUNNING' ? null : ago(60_000), workflow_id: `rollout-${id}`,
  });
  await models.OtaRollout.create([rollout(running, 'RUNNING'), rollout(finished, 'COMPLETED')]);
  const old = job('COMPLETED', 60_000);
  // Finished "in a minute": neither this pass nor the API's own archiver (running meanwhile) may move it.
  const recent = job('FAILED', -60_000);
  const open = job('DOWNLOADING', null);
  const ofRunning = job('COMPLETED', 60_000, running);
  const ofFinished = [job('COMPLETED', 60_000, finished), job('FAILED', 60_000, finished)];
  await models.OtaJob.create([old, recent, open, ofRunning, ...ofFinished]);
  const before = await rolloutCounts(models, finished, [2], cfg.mongo.timeoutMs, -1);

  const pass = await archiveFinishedJobs({ models, cfg, options: { ...DEFAULT_OPTIONS, archiveAfterMs: 10_000, archiveMaxJobsPerPass: 100_000 } }, now);
  expect(pass.complete).toBe(true);
  const where = async (id: string) =>
    `${(await models.OtaJob.countDocuments({ _id: id })) ? 'live' : ''}${(await models.OtaJobArchive.countDocuments({ _id: id })) ? 'archive' : ''}`;
  expect(await where(old._id)).toBe('archive');
  expect(await where(recent._id)).toBe('live');
  expect(await where(open._id)).toBe('live');
  expect(await where(ofRunning._id)).toBe('live');
  for (const j of ofFinished) expect(await where(j._id)).toBe('archive');
  // The archived copy is the job as it was.
  expect(await findJob(models, old._id)).toMatchObject({ _id: old._id, status: 'COMPLETED', robot_id: robot.id, deploy_path: old.deploy_path });
  // A finished rollout's counts are the same before and after its jobs moved.
  expect(await rolloutCounts(models, finished, [2], cfg.mongo.timeoutMs, -1)).toEqual(before);
  expect(before[0].status).toEqual({ COMPLETED: 1, FAILED: 1 });
  // A second pass finds nothing more of these to move, and moving again is harmless.
  await archiveFinishedJobs({ models, cfg, options: { ...DEFAULT_OPTIONS, archiveAfterMs: 10_000, archiveMaxJobsPerPass: 100_000 } }, now);
  expect(await where(recent._id)).toBe('live');
  expect(await models.OtaJobArchive.countDocuments({ _id: old._id })).toBe(1);
});
