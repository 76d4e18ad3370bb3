// Rollouts end to end with real processes (worker, bridge, API, one daemon per robot): waves advance only past
// their success threshold, an offline robot completes once it reconnects, failures at the abort threshold cancel
// the rest (nothing is installed after the abort is stored), pause stops new dispatches until resume, and the
// worker, the bridge, the broker and the API can be SIGKILLed while the rollout's robots are downloading, the
// worker inside a dispatch activity and the bridge with a report batch on its way.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { restartServer } from '../../infra/stack';
import { cfg, eventually, sha256File, temporalClient, testRobots, type ChildHandle } from '../helpers';
import { connectMqtt, uniqueClientId } from '../../activities/mqtt/connection';
import { connectAsRobot, deployFromS3, startOtaSystem, uploadFile, type OtaSystem } from './system';
import { overlayRolloutResults } from '../../activities/db/ota-rollout-results';
import { rolloutJobId } from '../../activities/mqtt/ota-rollout';
import { archiveFinishedJobs } from '../../api/ota/archiver';
import { DEFAULT_OPTIONS } from '../../api/ota/types';
import { topics } from '../../common/protocol';

let sys: OtaSystem;
/** robots[0]'s daemon (started by the waves test); the flood test takes over its MQTT identity. */
let offlineDaemon: ChildHandle | null = null;
const robots = testRobots();
// A capped link makes each download of the slow file last ~1.5 s: long enough to pause or kill mid-rollout.
const RATE = 1024 * 1024;

beforeAll(async () => {
  sys = await startOtaSystem({ daemonsFor: [] });
  await Promise.all(robots.slice(1).map((r) => sys.startDaemon(r, { max_download_bytes_per_s: RATE })));
}, 180000);
afterAll(async () => {
  await sys?.stop();
});

/** The rollout's deploy path: every simulated robot's root is `<fleet>/<id>/root`; a folder per test run. */
const RUN = Date.now().toString(36);
const template = (name: string) => path.join(path.dirname(path.dirname(robots[0].root)), '{robot_id}', 'root', 'rollout', RUN, name);
const targetOf = (name: string, robotId: string) => template(name).split('{robot_id}').join(robotId);

interface RolloutView {
  rollout_id: string;
  status: string;
  paused: boolean;
  current_wave: number;
  reason: string | null;
  finished_at: string | null;
  counts: Record<string, number>;
  waves: Array<{ wave: number; size: number; counts: Record<string, number>; queued: number; awaiting_robot: number; in_flight: number }>;
}

async function createRollout(body: Record<string, unknown>): Promise<string> {
  const res = await sys.call('/rollouts', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const json = (await res.json()) as { rollout_id: string };
  if (res.status !== 201) throw new Error(`POST /rollouts: ${res.status} ${JSON.stringify(json)}`);
  return json.rollout_id;
}

async function rollout(id: string): Promise<RolloutView> {
  const res = await sys.call(`/rollouts/${id}`);
  if (res.status !== 200) throw new Error(`GET /rollouts/${id}: ${res.status} ${await res.text()}`);
  return (await res.json()) as RolloutView;
}

const waitRollout = (id: string, statuses: string[], timeoutMs = 60000) =>
  eventually(`rollout ${statuses.join('|')}`, async () => {
    const r = await rollout(id);
    return statuses.includes(r.status) ? r : null;
  }, timeoutMs);

/**
 * A rollout's jobs as stored: live documents with their result rows applied (a live rollout job's end is a row of
 * its own, activities/db/ota-rollout-results.ts), or already archived with it folded in (api/ota/archiver.ts).
 */
async function storedJobs(id: string) {
  const [live, archived] = await Promise.all([
    sys.db.models.OtaJob.find({ deployment_id: id }).lean(),
    sys.db.models.OtaJobArchive.find({ deployment_id: id }).lean(),
  ]);
  return [...(await overlayRolloutResults(sys.db.models.OtaRolloutResult, live)), ...archived];
}

async function jobsOf(id: string): Promise<Array<{ job_id: string; robot_id: string; status: string }>> {
  const res = await sys.call(`/jobs?deployment_id=${id}&limit=100`);
  return ((await res.json()) as { jobs: Array<{ job_id: string; robot_id: string; status: string }> }).jobs;
}

test('bad rollout requests are refused with the field named', async () => {
  const object = await uploadFile(sys, 'bad.bin', crypto.randomBytes(1000));
  const post = (body: unknown) => sys.call('/rollouts', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const cases: Array<[unknown, number, string]> = [
    [{ s3_object_name: object, deploy_path: template('x'), target: {} }, 422, 'target'],
    [{ s3_object_name: object, deploy_path: template('x'), target: { robot_ids: ['nope-robot'] } }, 400, 'target.robot_ids.0'],
    [{ s3_object_name: object, deploy_path: '/etc/{robot_id}', target: { robot_ids: [robots[1].id] } }, 400, 'deploy_path'],
    [{ s3_object_name: object, deploy_path: template('x'), target: { robot_ids: [robots[1].id] }, waves: [50, 10] }, 422, 'waves'],
    [{ s3_object_name: 'missing', deploy_path: template('x'), target: { robot_ids: [robots[1].id] } }, 404, 's3_object_name'],
  ];
  for (const [body, status, field] of cases) {
    const res = await post(body);
    expect(res.status).toBe(status);
    expect(await res.text()).toContain(field);
  }
  expect((await sys.db.models.OtaJob.countDocuments({ deployment_id: { $ne: null } })).valueOf()).toBe(0);
});

test('waves: the second wave waits for the first to pass its threshold; an offline robot completes once it reconnects', async () => {
  const bytes = crypto.randomBytes(50_000);
  const object = await uploadFile(sys, 'waves.bin', bytes);
  const [offline, ...online] = robots;
  const id = await createRollout({
    s3_object_name: object,
    deploy_path: template('waves.bin'),
    target: { robot_ids: robots.map((r) => r.id) },
    waves: [25, 100],
    success_threshold_pct: 100,
  });
  // Wave 0 is the offline robot alone: it waits for the robot, and wave 1 does not start.
  const waiting = await eventually('wave 0 awaiting its robot', async () => {
    const r = await rollout(id);
    return r.waves[0].awaiting_robot === 1 ? r : null;
  });
  expect(waiting.status).toBe('RUNNING');
  expect(waiting.waves.map((w) => w.size)).toEqual([1, 3]);
  await new Promise((r) => setTimeout(r, 2000));
  const still = await rollout(id);
  expect(still.current_wave).toBe(0);
  expect(still.waves[1].queued).toBe(3);
  for (const r of online) expect(fs.existsSync(targetOf('waves.bin', r.id))).toBe(false);

  offlineDaemon = await sys.startDaemon(offline);
  const done = await waitRollout(id, ['COMPLETED', 'FAILED', 'ABORTED'], 60000);
  expect(done.status).toBe('COMPLETED');
  expect(done.counts).toEqual({ COMPLETED: 4 });
  for (const r of robots) expect(fs.readFileSync(targetOf('waves.bin', r.id)).equals(bytes)).toBe(true);
  // The wave-1 robots finished after the wave-0 robot: their jobs were dispatched only once it had completed.
  const jobs = await storedJobs(id);
  const first = jobs.find((j) => j.robot_id === offline.id)!;
  for (const j of jobs.filter((x) => x.wave === 1)) expect(j.finished_at!.getTime()).toBeGreaterThanOrEqual(first.finished_at!.getTime());
  // Every job is an ordinary job: job_state, /jobs and deploy_state show it.
  const listed = await jobsOf(id);
  expect(listed.map((j) => j.status)).toEqual(['COMPLETED', 'COMPLETED', 'COMPLETED', 'COMPLETED']);
  const js = (await (await sys.call(`/job_state/${first._id}`)).json()) as { status: string; robot_id: string };
  expect(js).toMatchObject({ status: 'COMPLETED', robot_id: offline.id });
  const ds = (await (await sys.call(`/deploy_state/${online[0].id}`)).json()) as Array<{ deploy_path: string }>;
  expect(ds.map((d) => d.deploy_path)).toContain(targetOf('waves.bin', online[0].id));
  // Visible in Temporal by DeploymentId, and cheap: tens of history events for the whole rollout.
  const t = await temporalClient();
  try {
    const handle = t.client.workflow.getHandle(`ota-rollout-${id}`);
    const desc = await handle.describe();
    expect(desc.status.name).toBe('COMPLETED');
    // Below what four single-job workflows cost (about 56 events each): reports of a robot that arrive apart
    // still cost a signal each here; at fleet scale they share windows (bench/ota-rollout.ts measures per robot).
    expect(desc.historyLength).toBeLessThan(4 * 40);
    const found = await eventually('visible by DeploymentId', async () => {
      for await (const wf of t.client.workflow.list({ query: `DeploymentId = "${id}"` })) return wf.workflowId;
      return null;
    });
    expect(found).toBe(`ota-rollout-${id}`);
  } finally {
    await t.close();
  }
});

test('abort: failures at the threshold cancel the rest, and nothing is installed after the abort is stored', async () => {
  const object = await uploadFile(sys, 'abort.bin', crypto.randomBytes(50_000));
  const [failing, ...others] = robots;
  // The failing robot's target is a non-empty directory: the daemon cannot install over it and reports FAILED.
  fs.mkdirSync(path.join(targetOf('abort.bin', failing.id), 'occupied'), { recursive: true });
  const id = await createRollout({
    s3_object_name: object,
    deploy_path: template('abort.bin'),
    target: { robot_ids: robots.map((r) => r.id) },
    max_concurrency: 1,
    abort_after_failures: 1,
  });
  const aborted = await waitRollout(id, ['ABORTED', 'COMPLETED', 'FAILED'], 60000);
  expect(aborted.status).toBe('ABORTED');
  expect(aborted.reason).toContain('1 robots failed');
  expect(aborted.counts).toEqual({ FAILED: 1, CANCELED: 3 });
  const abortedAt = new Date(aborted.finished_at!).getTime();
  await new Promise((r) => setTimeout(r, 3000));
  for (const r of others) {
    expect(fs.existsSync(targetOf('abort.bin', r.id))).toBe(false);
    expect(fs.existsSync(`${targetOf('abort.bin', r.id)}.part`)).toBe(false);
  }
  const jobs = await storedJobs(id);
  expect(jobs).toHaveLength(robots.length);
  expect(jobs.filter((j) => j.status === 'COMPLETED')).toHaveLength(0);
  for (const j of jobs) expect(j.finished_at!.getTime()).toBeLessThanOrEqual(abortedAt + 1000);
  // The cancelled ones never left the cloud (concurrency 1: the failure came first).
  expect(jobs.filter((j) => j.status === 'CANCELED').every((j) => j.dispatch_state === 'queued')).toBe(true);
  fs.rmSync(targetOf('abort.bin', failing.id), { recursive: true, force: true });
});

test('pause stops new dispatches until resume; the robots then all complete', async () => {
  const bytes = crypto.randomBytes(1_500_000);
  const object = await uploadFile(sys, 'pause.bin', bytes);
  const slow = robots.slice(1);
  const id = await createRollout({ s3_object_name: object, deploy_path: template('pause.bin'), target: { robot_ids: slow.map((r) => r.id) }, max_concurrency: 1 });
  const res = await sys.call(`/rollouts/${id}/pause`, { method: 'POST' });
  expect(res.status).toBe(202);
  const paused = await waitRollout(id, ['PAUSED'], 20000);
  expect(paused.paused).toBe(true);
  // The job in flight when the pause landed finishes; nothing else starts.
  await eventually('in-flight job done', async () => (await rollout(id)).waves[0].in_flight === 0, 20000);
  const held = await rollout(id);
  await new Promise((r) => setTimeout(r, 2000));
  const later = await rollout(id);
  expect(later.status).toBe('PAUSED');
  expect(later.waves[0].queued).toBe(held.waves[0].queued);
  expect(later.waves[0].queued).toBeGreaterThan(0);
  expect(later.counts.COMPLETED ?? 0).toBe(held.counts.COMPLETED ?? 0);

  expect((await sys.call(`/rollouts/${id}/resume`, { method: 'POST' })).status).toBe(202);
  const done = await waitRollout(id, ['COMPLETED', 'FAILED', 'ABORTED'], 60000);
  expect(done.counts).toEqual({ COMPLETED: 3 });
  for (const r of slow) expect(fs.readFileSync(targetOf('pause.bin', r.id)).equals(bytes)).toBe(true);
  expect((await sys.call(`/rollouts/${id}/pause`, { method: 'POST' })).status).toBe(409);
});

test('the worker and the bridge are SIGKILLed while the rollout is in flight: a new pair finishes it', async () => {
  const bytes = crypto.randomBytes(1_500_000);
  const sha = crypto.createHash('sha256').update(bytes).digest('hex');
  const object = await uploadFile(sys, 'kill.bin', bytes);
  const slow = robots.slice(1);
  const id = await createRollout({ s3_object_name: object, deploy_path: template('kill.bin'), target: { robot_ids: slow.map((r) => r.id) }, max_concurrency: 2 });
  // The batch went out (worker log) and the robots are downloading it (their .part files grow).
  await sys.worker.waitForOutput('rollout batch dispatched', 20000);
  await eventually('downloads under way', async () => slow.some((r) => fs.existsSync(`${targetOf('kill.bin', r.id)}.part`)), 20000);
  await sys.worker.kill('SIGKILL');
  await sys.bridge.kill('SIGKILL');
  await new Promise((r) => setTimeout(r, 1500));
  await Promise.all([sys.startWorker(), sys.startBridge()]);
  const done = await waitRollout(id, ['COMPLETED', 'FAILED', 'ABORTED'], 90000);
  expect(done.counts).toEqual({ COMPLETED: 3 });
  for (const r of slow) expect(sha256File(targetOf('kill.bin', r.id))).toBe(sha);
});

/** A log line naming `message` and this rollout (pino: one JSON object per line, fields in any order). */
const lineOf = (message: string, rolloutId: string) => new RegExp(`^(?=.*${message})(?=.*${rolloutId}).*$`, 'm');

/**
 * SIGKILLs the process the moment its output shows `line` (from the output's own data event: polling it would
 * leave the work that line announces time to finish first); resolves once it has exited.
 */
function killAtLine(child: ChildHandle, line: RegExp, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let seen = '';
    const timer = setTimeout(() => reject(new Error(`no line ${line} within ${timeoutMs} ms`)), timeoutMs);
    const onData = (d: Buffer) => {
      seen = (seen + d.toString()).slice(-20000);
      if (!line.test(seen)) return;
      child.proc.kill('SIGKILL');
      clearTimeout(timer);
      for (const s of [child.proc.stdout!, child.proc.stderr!]) s.off('data', onData);
      void child.kill('SIGKILL').then(resolve);
    };
    for (const s of [child.proc.stdout!, child.proc.stderr!]) s.on('data', onData);
  });
}

test('the worker is SIGKILLed inside a dispatch activity and the bridge with a report batch in flight: the rollout completes', async () => {
  const bytes = crypto.randomBytes(1_500_000);
  const sha = crypto.createHash('sha256').update(bytes).digest('hex');
  const object = await uploadFile(sys, 'inflight.bin', bytes);
  const slow = robots.slice(1);
  // The dispatch activity logged its first step for this rollout: it is running. Killed there, it is still pending
  // on the server (the proof it was in flight), and its retry on the new worker sends the batch.
  const workerKilled = killAtLine(sys.worker, new RegExp(lineOf('rollout batch publishing', '[0-9a-f-]{36}').source, 'm'), 30000);
  const id = await createRollout({ s3_object_name: object, deploy_path: template('inflight.bin'), target: { robot_ids: slow.map((r) => r.id) }, max_concurrency: 1 });
  await workerKilled;
  expect(lineOf('rollout batch publishing', id).test(sys.worker.output())).toBe(true);
  const t = await temporalClient();
  try {
    const { raw } = await t.client.workflow.getHandle(`ota-rollout-${id}`).describe();
    expect((raw.pendingActivities ?? []).map((a) => a.activityType?.name)).toContain('dispatchRolloutBatch');
  } finally {
    await t.close();
  }
  // The bridge is about to signal a batch of this rollout's reports (already acked to the broker): killed there,
  // the daemons' state heartbeats bring the reports to the next bridge until the rollout acks them.
  const bridgeKilled = killAtLine(sys.bridge, lineOf('rollout events batch sending', id), 90000);
  await sys.startWorker();
  await bridgeKilled;
  await sys.startBridge();
  const done = await waitRollout(id, ['COMPLETED', 'FAILED', 'ABORTED'], 120000);
  expect(done.counts).toEqual({ COMPLETED: 3 });
  for (const r of slow) expect(sha256File(targetOf('inflight.bin', r.id))).toBe(sha);
});

test('the broker and the API are SIGKILLed while the rollout is in flight: it still completes', async () => {
  const bytes = crypto.randomBytes(1_500_000);
  const sha = crypto.createHash('sha256').update(bytes).digest('hex');
  const object = await uploadFile(sys, 'broker.bin', bytes);
  const slow = robots.slice(1);
  const id = await createRollout({ s3_object_name: object, deploy_path: template('broker.bin'), target: { robot_ids: slow.map((r) => r.id) }, max_concurrency: 1 });
  // The first robot is downloading (its .part grows) and the others are still queued behind the cap.
  await eventually('first download under way', async () => slow.some((r) => fs.existsSync(`${targetOf('broker.bin', r.id)}.part`)), 20000);
  await sys.api.kill('SIGKILL');
  await restartServer(cfg, 'mosquitto', true);
  await sys.startApi();
  const done = await waitRollout(id, ['COMPLETED', 'FAILED', 'ABORTED'], 120000);
  expect(done.counts).toEqual({ COMPLETED: 3 });
  for (const r of slow) expect(sha256File(targetOf('broker.bin', r.id))).toBe(sha);
});

test('cancel ends every unfinished job CANCELED and the rollout CANCELED', async () => {
  const object = await uploadFile(sys, 'cancel.bin', crypto.randomBytes(1_500_000));
  const slow = robots.slice(1);
  const id = await createRollout({ s3_object_name: object, deploy_path: template('cancel.bin'), target: { robot_ids: slow.map((r) => r.id) }, max_concurrency: 1 });
  expect((await sys.call(`/rollouts/${id}/cancel`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"reason":"test"}' })).status).toBe(202);
  const done = await waitRollout(id, ['CANCELED'], 30000);
  expect(done.reason).toBe('canceled: test');
  expect((done.counts.CANCELED ?? 0) + (done.counts.COMPLETED ?? 0)).toBe(3);
  expect(done.counts.CANCELED).toBeGreaterThanOrEqual(2);
  // A single deploy runs as a batch (a rollout of its own): listed only when asked for.
  await deployFromS3(sys, object, robots[0].id, targetOf('single.bin', robots[0].id));
  type List = { rollouts: Array<{ rollout_id: string }>; next_cursor: string | null };
  const list = (await (await sys.call('/rollouts?limit=2')).json()) as List;
  expect(list.rollouts[0].rollout_id).toBe(id);
  expect(list.next_cursor).not.toBeNull();
  const withBatches = (await (await sys.call('/rollouts?limit=2&include_batches=true')).json()) as List;
  expect(withBatches.rollouts[0].rollout_id).toMatch(/^singles-/);
  expect(withBatches.rollouts[1].rollout_id).toBe(id);
});

test("a flooding robot does not delay another robot's rollout job; a queued job gets its URL when its turn comes; COMPLETED after its job's cancel is recorded; job_state before and after archiving", async () => {
  // Small: `queued` only has to wait for one capped download (~0.6 s).
  const object = await uploadFile(sys, 'flood.bin', crypto.randomBytes(600_000));
  const [flooder, first, queued] = robots;
  // The flooder is a robot of the rollout whose daemon is gone; the test floods its state topic as that robot.
  await offlineDaemon?.kill('SIGTERM');
  const presence = topics.presence(flooder.id);
  const robot = await connectAsRobot(flooder, { will: { topic: presence, payload: Buffer.from('offline'), qos: 1, retain: true } });
  // Online like a daemon, so its job is dispatched and holds a concurrency slot.
  await robot.publishAsync(presence, 'online', { qos: 1, retain: true });
  await eventually('flooder online', async () => (await sys.db.models.RobotPresence.findById(flooder.id).lean())?.online === true, 10000);
  // Every deploy message, as the robots get it (the cloud's credential may read every OTA topic).
  const watcher = await connectMqtt(cfg, { clientId: uniqueClientId('rollout-watch') });
  const deploys: Array<{ robotId: string; at: number; url: string }> = [];
  watcher.on('message', (topic, payload) => deploys.push({ robotId: topic.split('/')[1], at: Date.now(), url: (JSON.parse(payload.toString()) as { url: string }).url }));
  await watcher.subscribeAsync(topics.deploy('+'), { qos: 1 });
  try {
    // Concurrency 2: the flooder and `first` go out; `queued` waits for `first` to finish (the flooder never does).
    const t0 = Date.now();
    const id = await createRollout({ s3_object_name: object, deploy_path: template('flood.bin'), target: { robot_ids: [flooder.id, first.id, queued.id] }, max_concurrency: 2 });
    const floodJob = rolloutJobId(id, flooder.id);
    const FLOOD = 5000;
    const flood = Promise.all(
      Array.from({ length: FLOOD }, (_, i) => robot.publishAsync(topics.state(flooder.id), JSON.stringify({ [floodJob]: { status: 'DOWNLOADING', progress: i / 100 } }), { qos: 1 })),
    );
    await sys.bridge.waitForOutput('state messages over the per-robot rate limit dropped', 30000);
    const done = await eventually('the other robots completed', async () => {
      const r = await rollout(id);
      return (r.counts.COMPLETED ?? 0) === 2 ? r : null;
    }, 60000);
    // Two capped downloads one after the other, plus dispatch and report windows: well under 20 s,
    // flood or not (a shared machine: generous).
    expect(Date.now() - t0).toBeLessThan(20000);
    await flood;
    expect(done.waves[0].in_flight).toBe(1); // the flooder's job, still open
    // The flood reached neither the rollout's history (reports of a job are one signal per batch) nor the database.
    const t = await temporalClient();
    try {
      expect((await t.client.workflow.getHandle(`ota-rollout-${id}`).describe()).historyLength).toBeLessThan(200);
    } finally {
      await t.close();
    }
    // The queued robot's message (and its presigned URL) was made when its turn came, after `first` had ended.
    const firstEnd = (await storedJobs(id)).find((j) => j.robot_id === first.id)!.finished_at!.getTime();
    const msg = deploys.find((d) => d.robotId === queued.id)!;
    expect(msg.at).toBeGreaterThanOrEqual(firstEnd - 1000);
    const signedAt = new URL(msg.url).searchParams.get('X-Amz-Date')!.replace(/^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/, '$1-$2-$3T$4:$5:$6Z');
    const expires = Number(new URL(msg.url).searchParams.get('X-Amz-Expires'));
    expect(Date.parse(signedAt)).toBeGreaterThanOrEqual(firstEnd - 2000);
    expect(Date.parse(signedAt) + expires * 1000).toBeGreaterThan(Date.now() + 60_000);

    // The operator cancels the flooder's job alone; the robot then reports it COMPLETED anyway: the job stays
    // CANCELED, and its result and deploy_state say what the robot holds. The rollout then ends on its own (2 of 3).
    expect((await sys.call(`/job/${floodJob}/cancel`, { method: 'POST' })).status).toBe(202);
    await eventually('flooder job canceled', async () => (await sys.db.models.OtaRolloutResult.findById(floodJob).lean())?.status === 'CANCELED', 30000);
    const noted = await eventually('installed-after-end noted', async () => {
      // Sent again each poll, like a daemon's heartbeat: the flood's backlog may still hold the robot's rate limit.
      await robot.publishAsync(topics.state(flooder.id), JSON.stringify({ [floodJob]: { status: 'COMPLETED' } }), { qos: 1 });
      const row = await sys.db.models.OtaRolloutResult.findById(floodJob).lean();
      return row?.error_msg && /already installed/.test(row.error_msg) ? row : null;
    }, 30000);
    expect(noted.status).toBe('CANCELED');
    expect(await sys.db.models.DeployTarget.findOne({ job_id: floodJob }).lean()).toMatchObject({ robot_id: flooder.id, deploy_path: targetOf('flood.bin', flooder.id) });
    expect((await waitRollout(id, ['COMPLETED', 'FAILED'], 30000)).counts).toEqual({ COMPLETED: 2, CANCELED: 1 });
    // Every job through the reference endpoints, while the ends are result rows and after the archiver folded them in.
    const expected = { [flooder.id]: 'CANCELED', [first.id]: 'COMPLETED', [queued.id]: 'COMPLETED' };
    const check = async () => {
      for (const r of [flooder, first, queued]) {
        const js = (await (await sys.call(`/job_state/${rolloutJobId(id, r.id)}`)).json()) as { status: string };
        expect(js.status).toBe(expected[r.id]);
      }
      const listed = await jobsOf(id);
      expect(Object.fromEntries(listed.map((j) => [j.robot_id, j.status]))).toEqual(expected);
      const completed = (await (await sys.call(`/jobs?deployment_id=${id}&status=COMPLETED`)).json()) as { jobs: Array<{ robot_id: string }> };
      expect(completed.jobs.map((j) => j.robot_id).sort()).toEqual([first.id, queued.id].sort());
      const pending = (await (await sys.call(`/jobs?deployment_id=${id}&status=PENDING`)).json()) as { jobs: unknown[] };
      expect(pending.jobs).toHaveLength(0);
      expect((await rollout(id)).counts).toEqual({ COMPLETED: 2, CANCELED: 1 });
    };
    expect(await sys.db.models.OtaRolloutResult.countDocuments({ deployment_id: id })).toBe(3);
    await check();
    await archiveFinishedJobs({ models: sys.db.models, cfg, options: { ...DEFAULT_OPTIONS, archiveAfterMs: 0, archiveMaxJobsPerPass: 100_000 } }, Date.now() + 1000);
    expect(await sys.db.models.OtaJob.countDocuments({ deployment_id: id })).toBe(0);
    expect(await sys.db.models.OtaRolloutResult.countDocuments({ deployment_id: id })).toBe(0);
    expect((await sys.db.models.OtaJobArchive.find({ deployment_id: id }).lean()).map((j) => j.status).sort()).toEqual(['CANCELED', 'COMPLETED', 'COMPLETED']);
    await check();
  } finally {
    await robot.publishAsync(presence, 'offline', { qos: 1, retain: true }).catch(() => undefined);
    await Promise.allSettled([robot.endAsync(), watcher.endAsync()]);
  }
});
