// The otaRollout activities' counts against the real servers (FerretDB, Mosquitto, versitygw): a dispatch batch
// and an apply of reports that run side by side answer moves that, added to the counts the workflow holds in
// either order, give what a fresh count of the stored jobs says; and an apply retried after an attempt that
// stored its rows (a worker killed before its answer reached the workflow) counts those rows once, stores
// nothing twice, while a later call with the same reports moves nothing.
import crypto from 'node:crypto';
import { PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { MockActivityEnvironment } from '@temporalio/testing';
import type { MqttClient } from 'mqtt';
import { connectMqtt, uniqueClientId } from '../../activities/mqtt/connection';
import { createOtaRolloutActivities, rolloutJobId } from '../../activities/mqtt/ota-rollout';
import { rolloutRobotParts } from '../../activities/db/ota-rollouts';
import { createS3Client } from '../../activities/s3/client';
import { connectDb, type Db } from '../../common/db';
import { shifted } from '../../workflows/ota-rollout';
import { rolloutWorkflowId, type CountsAnswer, type RolloutReport, type WaveCounts } from '../../workflows/ota-rollout-contract';
import { topics } from '../../common/protocol';
import { cfg, uniqueId } from '../helpers';

const TEST_DB = 'fleet_test_ota_rollout_activities';
const bucket = cfg.s3.buckets[0];

let db: Db;
let s3: S3Client;
let cloud: MqttClient;

beforeAll(async () => {
  db = await connectDb(cfg, TEST_DB);
  s3 = createS3Client(cfg);
  cloud = await connectMqtt(cfg, { clientId: uniqueClientId('test-rollout-acts') });
});

afterAll(async () => {
  await Promise.allSettled([cloud?.endAsync(), db?.connection.dropDatabase().then(() => db.close())]);
  s3?.destroy();
});

const acts = () => createOtaRolloutActivities({ mqtt: cloud, models: db.models, s3, cfg });
/** An activity context: attempt `attempt` of call `activityId` of workflow run `runId`. */
const env = (activityId: string, attempt = 1, runId = 'run-1') =>
  new MockActivityEnvironment({ activityId, attempt, workflowExecution: { workflowId: 'wf', runId } });
type Acts = ReturnType<typeof acts>;
const dispatchIn = (e: MockActivityEnvironment, ...a: Parameters<Acts['dispatchRolloutBatch']>) =>
  e.run(acts().dispatchRolloutBatch, ...a) as ReturnType<Acts['dispatchRolloutBatch']>;
const applyIn = (e: MockActivityEnvironment, ...a: Parameters<Acts['applyRolloutEvents']>) => e.run(acts().applyRolloutEvents, ...a) as ReturnType<Acts['applyRolloutEvents']>;
const countsOf = (a: CountsAnswer): WaveCounts[] => (Array.isArray(a) ? a : a.counts);
const movedOf = (a: CountsAnswer): boolean => !Array.isArray(a) && a.moved === true;

/** A rollout of `n` robots (one wave), its jobs created, every robot online; answers its id and robots. */
async function rolloutOf(n: number, partSize?: number): Promise<{ rolloutId: string; robots: string[]; fresh: WaveCounts[] }> {
  const body = crypto.randomBytes(4096);
  const key = `${uniqueId('obj')}.bin`;
  await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }));
  const rolloutId = crypto.randomUUID();
  const robots = Array.from({ length: n }, (_, i) => uniqueId(`rb${i}`));
  const now = new Date();
  await db.models.OtaRollout.create({
    _id: rolloutId,
    s3_bucket: bucket,
    s3_object_name: key,
    sha256: crypto.createHash('sha256').update(body).digest('hex'),
    size: body.length,
    deploy_path: '/opt/app/{robot_id}.bin',
    // With a part size: the ids kept apart, as the API stores them (robot_parts).
    robot_ids: partSize ? [] : robots,
    ...(partSize ? { robot_parts: Math.ceil(n / partSize) } : {}),
    wave_sizes: [n],
    options: {},
    status: 'RUNNING',
    timestamp: now,
    updated_at: now,
    workflow_id: rolloutWorkflowId(rolloutId),
  });
  if (partSize) await db.models.OtaRolloutRobots.insertMany(rolloutRobotParts(rolloutId, robots, partSize));
  await db.models.RobotPresence.insertMany(robots.map((_id) => ({ _id, online: true, changed_at: now })));
  await env('create').run(acts().createRolloutJobs, rolloutId);
  return { rolloutId, robots, fresh: [{ size: n, status: { PENDING: n }, queued: n, awaitingRobot: 0, inFlight: 0 }] };
}

const completed = (rolloutId: string, robots: readonly string[]): RolloutReport[] =>
  robots.map((robotId) => ({ jobId: rolloutJobId(rolloutId, robotId), robotId, status: 'COMPLETED', error_msg: null }));
/** What the stored jobs say (a dispatch of nothing answers a fresh count). */
const stored = async (rolloutId: string) => countsOf(await dispatchIn(env('count'), rolloutId, 0, 0));

test('a dispatch and an apply side by side: their moves added in either order equal a fresh count', async () => {
  const { rolloutId, robots, fresh } = await rolloutOf(8);
  const first = await dispatchIn(env('d1'), rolloutId, 0, 4, fresh);
  expect(first.moved).toBe(true);
  const held = first.counts;
  expect(held).toEqual([{ size: 8, status: { PENDING: 8 }, queued: 4, awaitingRobot: 0, inFlight: 4 }]);
  // Reports for two robots of the first batch and one of the second, sent as soon as that robot gets its deploy
  // message, while its batch may still be running: the apply moves it out of flight, never out of the queue.
  const reports = completed(rolloutId, [robots[0], robots[1], robots[5]]);
  const robot = await connectMqtt(cfg, { clientId: uniqueClientId('test-rollout-robot') });
  let dispatch: Awaited<ReturnType<typeof dispatchIn>>;
  let apply: CountsAnswer;
  try {
    const delivered = new Promise<void>((resolve) => robot.on('message', () => resolve()));
    await robot.subscribeAsync(topics.deploy(robots[5]), { qos: 1 });
    const dispatching = dispatchIn(env('d2'), rolloutId, 0, 4, held);
    await delivered;
    [dispatch, apply] = await Promise.all([dispatching, applyIn(env('a1'), rolloutId, { reports, online: [] }, true, held)]);
  } finally {
    await robot.endAsync();
  }
  expect(dispatch.moved).toBe(true);
  expect(movedOf(apply)).toBe(true);
  const dispatchFirst = shifted(shifted(held, held, dispatch.counts), held, countsOf(apply));
  const applyFirst = shifted(shifted(held, held, countsOf(apply)), held, dispatch.counts);
  const expected = [{ size: 8, status: { PENDING: 5, COMPLETED: 3 }, queued: 0, awaitingRobot: 0, inFlight: 5 }];
  expect(dispatchFirst).toEqual(expected);
  expect(applyFirst).toEqual(expected);
  expect(await stored(rolloutId)).toEqual(expected);
});

test('an apply retried after its first attempt stored the rows counts them once; a later call with the same reports moves nothing', async () => {
  const { rolloutId, robots, fresh } = await rolloutOf(4);
  const held = (await dispatchIn(env('d1'), rolloutId, 0, 4, fresh)).counts;
  const events = { reports: completed(rolloutId, robots.slice(0, 3)), online: [] };
  // Attempt 1 stores the three rows; its answer is lost (the worker dies): the workflow still holds `held`.
  const lost = await applyIn(env('a1', 1), rolloutId, events, true, held);
  const after = [{ size: 4, status: { PENDING: 1, COMPLETED: 3 }, queued: 0, awaitingRobot: 0, inFlight: 1 }];
  expect(countsOf(lost)).toEqual(after);
  // Attempt 2 of the same call finds every row there already, and knows them as its own: the same moves.
  const retried = await applyIn(env('a1', 2), rolloutId, events, true, held);
  expect(movedOf(retried)).toBe(true);
  expect(countsOf(retried)).toEqual(after);
  const rows = await db.models.OtaRolloutResult.find({ deployment_id: rolloutId }).lean();
  expect(rows).toHaveLength(3);
  expect(new Set(rows.map((r) => r.stored_by))).toEqual(new Set(['run-1/a1']));
  // Deploy targets for the three, once each.
  expect(await db.models.DeployTarget.countDocuments({ job_id: { $in: events.reports.map((r) => r.jobId) } })).toBe(3);
  // The same reports again in a later call (a robot repeating itself): they ended already, nothing moves.
  const repeat = await applyIn(env('a2', 1), rolloutId, events, true, countsOf(retried));
  expect(movedOf(repeat)).toBe(true);
  expect(countsOf(repeat)).toEqual(after);
  // And a retry of that later call, likewise: the rows are not its own.
  const repeatRetried = await applyIn(env('a2', 2), rolloutId, events, true, countsOf(retried));
  expect(countsOf(repeatRetried)).toEqual(after);
  expect(await db.models.OtaRolloutResult.countDocuments({ deployment_id: rolloutId })).toBe(3);
  expect(await stored(rolloutId)).toEqual(after);
});

test('the workflow merges moves: a job reported before its batch returns counts in flight minus one until it does', () => {
  const held: WaveCounts[] = [{ size: 4, status: { PENDING: 4 }, queued: 4, awaitingRobot: 0, inFlight: 0 }];
  const dispatch: WaveCounts[] = [{ size: 4, status: { PENDING: 4 }, queued: 2, awaitingRobot: 1, inFlight: 1 }];
  const apply: WaveCounts[] = [{ size: 4, status: { PENDING: 3, COMPLETED: 1 }, queued: 4, awaitingRobot: 0, inFlight: -1 }];
  const applyOnly = shifted(held, held, apply);
  // Between the two: every job is counted once in its status, and the unfinished total is right.
  expect(applyOnly).toEqual(apply);
  const both = shifted(applyOnly, held, dispatch);
  expect(both).toEqual([{ size: 4, status: { PENDING: 3, COMPLETED: 1 }, queued: 2, awaitingRobot: 1, inFlight: 0 }]);
  expect(shifted(shifted(held, held, dispatch), held, apply)).toEqual(both);
});

test('a rollout whose robot ids are kept apart (robot_parts) creates, dispatches and applies as one that lists them', async () => {
  const { rolloutId, robots, fresh } = await rolloutOf(8, 3);
  const jobs = await db.models.OtaJob.find({ deployment_id: rolloutId }, { robot_id: 1, seq: 1 }).sort({ seq: 1 }).lean();
  expect(jobs.map((j) => [j._id, j.robot_id, j.seq])).toEqual(robots.map((r, seq) => [rolloutJobId(rolloutId, r), r, seq]));
  // Batches across the parts' edges (3 | 3 | 2), derived from the robot list (moved, not counted).
  const first = await dispatchIn(env('p1'), rolloutId, 0, 4, fresh);
  expect(first).toMatchObject({ dispatched: 4, moved: true });
  const second = await dispatchIn(env('p2'), rolloutId, 0, 4, first.counts);
  expect(second).toMatchObject({ dispatched: 4, moved: true, counts: [{ size: 8, status: { PENDING: 8 }, queued: 0, awaitingRobot: 0, inFlight: 8 }] });
  const applied = await applyIn(env('p3'), rolloutId, { reports: completed(rolloutId, robots), online: [] }, true, second.counts);
  expect(movedOf(applied)).toBe(true);
  expect(countsOf(applied)).toEqual([{ size: 8, status: { COMPLETED: 8 }, queued: 0, awaitingRobot: 0, inFlight: 0 }]);
  expect(await stored(rolloutId)).toEqual(countsOf(applied));
});
