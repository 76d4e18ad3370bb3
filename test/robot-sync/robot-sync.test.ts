// Robot sync end to end: the offline app's worker and API as real processes, the center's Temporal namespace,
// real sshd robots. Each test registers its own robots (own ids, own RF root on a simulated robot) in this
// file's own offline database, so tests never see each other's files.
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Connection, WorkflowClient } from '@temporalio/client';
import { splitRanges } from '../../activities/ssh/openssh-put';
import { uploadPartPath } from '../../activities/ssh/sftp-upload';
import { connectOfflineDb, type OfflineDb } from '../../common/db';
import { markPerfectStateChanged } from '../../common/models/offline';
import { createCloudSyncDbActivities } from '../../activities/db/cloud-sync';
import { centerDirs, runDir, writeJson } from '../../activities/files/rf-cache';
import type { RobotSyncInput, RobotSyncProgress, RobotSyncResult, RobotSyncRobotResult } from '../../workflows/offline/robot-sync';
import { freePort } from '../ota/system';
import { cfg, eventually, fleet, runTs, sha256File, testRobots, uniqueId, type ChildHandle } from '../helpers';
import { startPasswordRobot, type PasswordRobot } from './password-robot';

/** RFs from this size go through OpenSSH's ssh client in this file's worker (ROBOT_SYNC_OPENSSH_FROM_BYTES). */
const OPENSSH_FROM = 48 * 1024 * 1024;
const suffix = uniqueId('rs').replace(/-/g, '_');
const PASSWORD_VAR = `ROBOT_SSH_PASSWORD_${suffix.toUpperCase()}`;
let env: Record<string, string>;
let db: OfflineDb;
let temporal: WorkflowClient;
let connection: Connection;
let worker: ChildHandle;
let api: ChildHandle;
let apiUrl: string;
let pwRobot: PasswordRobot;
const logs: string[] = [];
const rfCache = path.join(cfg.dataDir, 'robot-sync-test', suffix, 'rf-cache');

async function startWorker(): Promise<ChildHandle> {
  const w = runTs('workers/offline-worker.ts', env);
  await w.waitForOutput('offline worker started', 60000);
  return w;
}

beforeAll(async () => {
  pwRobot = await startPasswordRobot(cfg.fleet.sshBasePort + 90);
  const port = await freePort();
  env = {
    OFFLINE_MONGO_DB: `center_${suffix}`,
    OFFLINE_TASK_QUEUE: `center-${suffix}`,
    CENTER_ID: `c_${suffix}`,
    OFFLINE_API_PORT: String(port),
    RF_CACHE_DIR: rfCache,
    // Debug logs: the password must not appear even there.
    LOG_LEVEL: 'debug',
    ROBOT_SYNC_OPENSSH: 'true',
    ROBOT_SYNC_OPENSSH_FROM_BYTES: String(OPENSSH_FROM),
    [PASSWORD_VAR]: pwRobot.password,
  };
  apiUrl = `http://127.0.0.1:${port}/api`;
  fs.mkdirSync(rfCache, { recursive: true });
  db = await connectOfflineDb(cfg, env.OFFLINE_MONGO_DB);
  connection = await Connection.connect({ address: cfg.offline.temporal.address });
  temporal = new WorkflowClient({ connection, namespace: cfg.offline.temporal.namespace });
  worker = await startWorker();
  api = runTs('api/offline/main.ts', env);
  await api.waitForOutput('offline API listening', 60000);
});

afterAll(async () => {
  for (const c of [worker, api, pwRobot?.sshd]) {
    if (!c) continue;
    logs.push(c.output());
    await c.kill();
  }
  await db?.connection.dropDatabase().catch(() => undefined);
  await db?.close();
  await connection?.close();
});

interface Rf {
  sha256: string;
  size: number;
}

/** Puts an RF with random content into the cache (content-addressed, as cloud sync leaves it). */
function cachedRf(size: number): Rf {
  const bytes = crypto.randomBytes(size);
  const sha256 = crypto.createHash('sha256').update(bytes).digest('hex');
  fs.writeFileSync(path.join(rfCache, sha256), bytes);
  return { sha256, size };
}

interface TestRobot {
  id: string;
  rfRoot: string;
}

/** Registers a robot of this test (key auth, pinned key) on a simulated robot's sshd, with its own RF root. */
async function addRobot(sim = testRobots()[0], over: Record<string, unknown> = {}): Promise<TestRobot> {
  const id = uniqueId('bot');
  const rfRoot = path.join(sim.root, 'rf-tests', id);
  await db.models.Robot.create({
    _id: id,
    host: sim.ssh.host,
    port: sim.ssh.port,
    username: sim.ssh.username,
    credential_ref: `key:${fleet().clientKeyFile}`,
    host_key_sha256: sim.ssh.hostKeySha256,
    connected: true,
    rf_root: rfRoot,
    ...over,
  });
  return { id, rfRoot };
}

async function perfectState(robot: TestRobot, entries: Array<{ rel: string; rf: Rf }>): Promise<void> {
  await db.models.PerfectStateEntry.insertMany(
    entries.map(({ rel, rf }) => {
      const p = path.join(robot.rfRoot, rel);
      return { _id: `${robot.id}|${p}`, robot_id: robot.id, path: p, sha256: rf.sha256, size: rf.size, url: `https://cloud.invalid/rf/${rf.sha256}`, updated_at: new Date() };
    }),
  );
  // As cloud sync does after writing a perfect state.
  await markPerfectStateChanged(db.models, [robot.id]);
}

async function call(method: string, p: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${apiUrl}${p}`, { method, headers: { 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

/** "Update Robots" through the API; waits for the run, returns its result and the last progress seen. */
async function syncViaApi(robotIds: string[]): Promise<{ result: RobotSyncResult; progress: Record<string, unknown> }> {
  const started = await call('POST', '/robots/sync', { robot_ids: robotIds });
  expect(started.status).toBe(202);
  const done = await eventually(
    'robot sync finished',
    async () => {
      const r = await call('GET', '/robots/sync');
      return r.json.status === 'COMPLETED' ? r.json : null;
    },
    120000,
  );
  return { result: done.result as RobotSyncResult, progress: done.progress as Record<string, unknown> };
}

const byRobot = (r: RobotSyncResult, id: string): RobotSyncRobotResult => r.robots.find((x) => x.robotId === id)!;

const filesUnder = (dir: string): string[] =>
  fs.existsSync(dir) ? fs.readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => path.join(e.parentPath, e.name)) : [];

test('it uploads exactly the missing RFs, reports the unlisted ones, and a second run uploads 0 bytes', async () => {
  const robot = await addRobot();
  const rfs = Array.from({ length: 30 }, (_, i) => ({ rel: `lessons/l${i % 3}/rf${i}.bin`, rf: cachedRf(8 * 1024 + i) }));
  rfs.push({ rel: 'media/clip.bin', rf: cachedRf(3 * 1024 * 1024 + 5) });
  await perfectState(robot, rfs);
  // Already on the robot: five of them (right content), one with stale content, one the perfect state no longer lists.
  for (const { rel, rf } of rfs.slice(0, 6)) {
    fs.mkdirSync(path.dirname(path.join(robot.rfRoot, rel)), { recursive: true });
    fs.copyFileSync(path.join(rfCache, rf.sha256), path.join(robot.rfRoot, rel));
  }
  fs.writeFileSync(path.join(robot.rfRoot, rfs[5].rel), crypto.randomBytes(rfs[5].rf.size));
  fs.writeFileSync(path.join(robot.rfRoot, 'old.bin'), 'no longer listed');
  const missing = rfs.slice(5);

  const { result, progress } = await syncViaApi([robot.id]);
  const r = byRobot(result, robot.id);
  expect(r.status).toBe('synced');
  expect(r.inventory).toMatchObject({ files: 7, hashed: 7 });
  expect(r.upload).toMatchObject({
    planned: { files: missing.length, bytes: missing.reduce((n, x) => n + x.rf.size, 0) },
    uploaded: { files: missing.length, bytes: missing.reduce((n, x) => n + x.rf.size, 0) },
    sentBytes: missing.reduce((n, x) => n + x.rf.size, 0),
    skipped: { files: 5, bytes: rfs.slice(0, 5).reduce((n, x) => n + x.rf.size, 0) },
    failed: { files: 0, bytes: 0 },
    unlisted: { files: 1, bytes: 16, sample: [path.join(robot.rfRoot, 'old.bin')] },
  });
  for (const { rel, rf } of rfs) expect(sha256File(path.join(robot.rfRoot, rel))).toBe(rf.sha256);
  // Nothing deleted, no .part left anywhere.
  expect(fs.readFileSync(path.join(robot.rfRoot, 'old.bin'), 'utf8')).toBe('no longer listed');
  expect(filesUnder(robot.rfRoot).filter((f) => f.endsWith('.part'))).toEqual([]);
  // The progress the UI reads: every byte and file of the robot done.
  const robotProgress = (progress.robots as Array<Record<string, unknown>>).find((p) => p.robotId === robot.id);
  expect(robotProgress).toMatchObject({ status: 'synced', files: { done: missing.length, total: missing.length }, bytes: { done: r.upload!.planned.bytes, total: r.upload!.planned.bytes } });
  // The inventory for the next cloud sync: every RF with its sha256, and the robot's last sync.
  const inv = await db.models.InventoryEntry.find({ robot_id: robot.id }).lean();
  expect(inv).toHaveLength(32);
  for (const { rel, rf } of rfs) expect(inv.find((e) => e.path === path.join(robot.rfRoot, rel))?.sha256).toBe(rf.sha256);
  // Each uploaded RF's entry holds the robot's own size and mtime (taken from its part before the rename).
  for (const { rel } of missing) {
    const st = fs.statSync(path.join(robot.rfRoot, rel));
    const e = inv.find((x) => x.path === path.join(robot.rfRoot, rel))!;
    expect(e.size).toBe(st.size);
    expect(Math.abs(e.mtime.getTime() - st.mtimeMs)).toBeLessThanOrEqual(1);
  }
  expect((await db.models.Robot.findById(robot.id).lean())?.last_sync).toMatchObject({ status: 'synced', uploaded: { files: missing.length } });

  const again = byRobot((await syncViaApi([robot.id])).result, robot.id);
  expect(again.status).toBe('synced');
  expect(again.inventory).toMatchObject({ files: 32, hashed: 0 });
  expect(again.upload).toMatchObject({
    planned: { files: 0, bytes: 0 },
    uploaded: { files: 0, bytes: 0 },
    sentBytes: 0,
    skipped: { files: rfs.length, bytes: rfs.reduce((n, x) => n + x.rf.size, 0) },
    unlisted: { files: 1, bytes: 16, sample: [path.join(robot.rfRoot, 'old.bin')] },
  });
  // Same perfect-state token, same listing: nothing read but the robot's document, and said so.
  expect(again.unchanged).toBe(true);
  expect((await db.models.Robot.findById(robot.id).lean())?.last_sync).toMatchObject({ status: 'synced', uploaded: { files: 0 } });

  // The perfect state changes (a new RF, as cloud sync writes it and marks the robot): the next run sees it.
  const extra = { rel: 'lessons/new.bin', rf: cachedRf(12345) };
  await perfectState(robot, [extra]);
  const third = byRobot((await syncViaApi([robot.id])).result, robot.id);
  expect(third.unchanged).toBe(false);
  // Listed again, and nothing hashed: every stored entry's size and mtime are the robot's.
  expect(third.inventory).toMatchObject({ files: 32, hashed: 0 });
  expect(third.upload).toMatchObject({ uploaded: { files: 1, bytes: 12345 }, skipped: { files: rfs.length } });
  expect(sha256File(path.join(robot.rfRoot, extra.rel))).toBe(extra.rf.sha256);
  // A file removed on the robot changes its listing: found and sent again although the perfect state did not change.
  fs.rmSync(path.join(robot.rfRoot, rfs[0].rel));
  const fourth = byRobot((await syncViaApi([robot.id])).result, robot.id);
  expect(fourth).toMatchObject({ unchanged: false, inventory: { removed: 1 }, upload: { uploaded: { files: 1, bytes: rfs[0].rf.size } } });
  expect(sha256File(path.join(robot.rfRoot, rfs[0].rel))).toBe(rfs[0].rf.sha256);
  expect(byRobot((await syncViaApi([robot.id])).result, robot.id)).toMatchObject({ unchanged: true, upload: { sentBytes: 0, skipped: { files: rfs.length + 1 } } });
});

test('a robot that is down is reported unreachable and one not connected is skipped; the others complete', async () => {
  const up = await addRobot(testRobots()[1]);
  // Nothing listens on this port: the robot is off.
  const down = await addRobot(testRobots()[1], { port: cfg.fleet.sshBasePort + 95 });
  const off = await addRobot(testRobots()[1], { connected: false });
  const rf = cachedRf(20000);
  for (const r of [up, down, off]) await perfectState(r, [{ rel: 'a/one.bin', rf }]);

  const { result } = await syncViaApi([up.id, down.id, off.id]);
  expect(byRobot(result, up.id)).toMatchObject({ status: 'synced', upload: { uploaded: { files: 1, bytes: 20000 } } });
  expect(byRobot(result, down.id)).toMatchObject({ status: 'unreachable' });
  expect(byRobot(result, down.id).error).toMatch(/unreachable/);
  expect(byRobot(result, off.id)).toMatchObject({ status: 'not connected' });
  expect(sha256File(path.join(up.rfRoot, 'a/one.bin'))).toBe(rf.sha256);
  expect(fs.existsSync(off.rfRoot)).toBe(false);
});

test('first contact pins the host key; a changed key fails that robot with "host key mismatch" and uploads nothing', async () => {
  const [a, b] = testRobots();
  // Registered through the API: no key pinned yet; connecting records the one the robot presents.
  const id = uniqueId('bot');
  const rfRoot = path.join(a.root, 'rf-tests', id);
  const put = await call('PUT', `/robots/${id}`, { host: a.ssh.host, port: a.ssh.port, username: a.ssh.username, credential_ref: `key:${fleet().clientKeyFile}`, rf_root: rfRoot });
  expect(put.status).toBe(201);
  expect(put.json).toMatchObject({ host_key_sha256: null, connected: false });
  const connected = await call('POST', `/robots/${id}/connect`);
  expect(connected.status).toBe(200);
  expect(connected.json).toMatchObject({ host_key_sha256: a.ssh.hostKeySha256, connected: true, host_key_pinned_now: true });

  // The robot now presents another key (robot02's): a reinstalled robot or a man in the middle.
  await db.models.Robot.updateOne({ _id: id }, { $set: { host_key_sha256: b.ssh.hostKeySha256 } });
  await perfectState({ id, rfRoot }, [{ rel: 'x/y.bin', rf: cachedRf(5000) }]);
  const refused = await call('POST', `/robots/${id}/connect`);
  expect(refused.status).toBe(409);
  expect(String(refused.json.detail)).toMatch(/host key mismatch/);

  const { result } = await syncViaApi([id]);
  const r = byRobot(result, id);
  expect(r.status).toBe('host key mismatch');
  expect(r.error).toMatch(/host key mismatch/);
  expect(r.upload).toBeUndefined();
  expect(fs.existsSync(rfRoot)).toBe(false);
  expect((await db.models.Robot.findById(id).lean())?.host_key_sha256).toBe(b.ssh.hostKeySha256);

  // Bad input is refused naming the field.
  const bad = await call('PUT', `/robots/${id}`, { host: 'h', username: 'u', credential_ref: 'password:hunter2', rf_root: 'relative' });
  expect(bad.status).toBe(400);
  expect(String(bad.json.detail)).toMatch(/credential_ref: .*\brf_root: /s);
});

/** OpenSSH ssh children of this test's robot (their known_hosts alias names it). */
const sshChildren = (robotId: string) =>
  execFileSync('ps', ['-eo', 'pid=,args=']).toString().split('\n').filter((l) => l.includes(`HostKeyAlias=fleetsync-robot-${robotId}`));

/** The part holds the RF's own bytes over the first `n` bytes of every range (a hole reads as zeros). */
function rangesHeld(part: string, rf: Rf, ranges: Array<{ from: number }>, n: number): boolean {
  if (!fs.existsSync(part)) return false;
  const read = (file: string, at: number) => {
    const fd = fs.openSync(file, 'r');
    try {
      const b = Buffer.alloc(n);
      return b.subarray(0, fs.readSync(fd, b, 0, n, at));
    } finally {
      fs.closeSync(fd);
    }
  };
  return ranges.every((r) => read(part, r.from).equals(read(path.join(rfCache, rf.sha256), r.from)));
}

/**
 * Starts a sync of one large RF, SIGKILLs the worker once the robot holds more than 10 MiB of its part in every
 * range the transport writes (one for ssh2; two parallel streams for OpenSSH), restarts the worker and checks the
 * run completes with the whole file, sending only the rest — of every range.
 */
async function killDuringLargeUpload(
  size: number,
  ranges: Array<{ from: number; to: number }>,
  throttleBytesPerSec: number,
  duringUpload: (robotId: string) => void = () => undefined,
): Promise<void> {
  const robot = await addRobot(testRobots()[2]);
  const rf = cachedRf(size);
  await perfectState(robot, [{ rel: 'big/model.bin', rf }]);
  const target = path.join(robot.rfRoot, 'big/model.bin');
  const input: RobotSyncInput = { robotIds: [robot.id], throttleBytesPerSec };
  const workflowId = uniqueId('robot-sync-kill');
  const handle = await temporal.start('robotSync', { taskQueue: env.OFFLINE_TASK_QUEUE, workflowId, args: [input] });

  // Kill once the robot holds a good part of every range (the bytes themselves prove the upload is in flight).
  await eventually('upload in flight in every range', async () => rangesHeld(uploadPartPath(target), rf, ranges, 10 * 1024 * 1024), 60000);
  if (ranges.length > 1) {
    // ... and the server holds a heartbeat with every range's own offset (heartbeats reach it throttled).
    await eventually('every range heartbeated', async () => {
      const d = await temporal.getHandle(`${workflowId}/${robot.id}`).describe();
      const data = d.raw.pendingActivities?.[0]?.heartbeatDetails?.payloads?.[0]?.data;
      const beat = data ? (JSON.parse(Buffer.from(data).toString()) as { resume?: { ranges?: Array<{ from: number; at: number }> } }) : null;
      const at = beat?.resume?.ranges;
      return at && at.length === ranges.length && at.every((x) => x.at - x.from > 2 * 1024 * 1024);
    }, 60000);
  }
  // The UI's progress bar moves: bytes of this robot, read with the workflow's query.
  const moving = await eventually('progress reported', async () => {
    const p = await handle.query<RobotSyncProgress>('robotSyncProgress');
    const mine = p.robots.find((x) => x.robotId === robot.id);
    return mine && mine.bytes.done > 0 ? mine : null;
  });
  expect(moving).toMatchObject({ status: 'syncing', files: { done: 0, total: 1 }, bytes: { total: rf.size } });
  duringUpload(robot.id);
  await worker.kill('SIGKILL');
  // Nothing writes the part any more (an OpenSSH child dies with the worker): it stops changing.
  await new Promise((r) => setTimeout(r, 500));
  const atKill = fs.readFileSync(uploadPartPath(target));
  await new Promise((r) => setTimeout(r, 1000));
  expect(fs.readFileSync(uploadPartPath(target)).equals(atKill)).toBe(true);
  expect(sshChildren(robot.id)).toEqual([]);
  // Every range was still being written: none is complete.
  for (const x of ranges) expect(rangesHeld(uploadPartPath(target), rf, [{ from: x.to - 1024 * 1024 }], 1024 * 1024)).toBe(false);
  expect(fs.existsSync(target)).toBe(false);
  logs.push(worker.output());
  worker = await startWorker();

  const result = (await handle.result()) as RobotSyncResult;
  const r = byRobot(result, robot.id);
  expect(r.status).toBe('synced');
  expect(r.upload!.uploaded).toEqual({ files: 1, bytes: rf.size });
  // Resumed from the heartbeated offsets (at most what the robot held at the kill) and sent only the rest.
  expect(r.upload!.resumedFromBytes).toBeGreaterThan(ranges.length * 1024 * 1024);
  expect(r.upload!.resumedFromBytes).toBeLessThanOrEqual(atKill.length);
  expect(r.upload!.sentBytes).toBe(rf.size - r.upload!.resumedFromBytes);
  expect(sha256File(target)).toBe(rf.sha256);
  expect(fs.existsSync(uploadPartPath(target))).toBe(false);
  if (ranges.length > 1) {
    // Each range resumed from its own point: the new worker's log names what each did not send again.
    const line = await eventually('resume logged', async () => worker.output().split('\n').find((l) => l.includes('large RF resumed') && l.includes(robot.id)));
    const perRange = (/"resumedRanges":\[([\d,]+)\]/.exec(line)?.[1] ?? '').split(',').map(Number);
    expect(perRange).toHaveLength(ranges.length);
    for (const bytes of perRange) expect(bytes).toBeGreaterThan(1024 * 1024);
    expect(perRange.reduce((n, x) => n + x, 0)).toBe(r.upload!.resumedFromBytes);
  }
}

test('worker SIGKILL in the middle of a large upload: the run completes, no partial file at the target, only the remaining bytes are sent', async () => {
  const size = 40 * 1024 * 1024; // below the OpenSSH threshold: ssh2, one range
  await killDuringLargeUpload(size, [{ from: 0, to: size }], 6 * 1024 * 1024, (robotId) => expect(sshChildren(robotId)).toEqual([]));
});

test('the same through the OpenSSH transport, killed while both of its ranges are in flight: its ssh children die with the worker, the retry resumes each range', async () => {
  const size = OPENSSH_FROM + 8 * 1024 * 1024;
  const ranges = splitRanges(size, 2);
  expect(ranges).toHaveLength(2);
  // 2 MiB/s per stream: 14 s a range, longer than the heartbeats' throttling.
  await killDuringLargeUpload(size, ranges, 2 * 1024 * 1024, (robotId) => expect(sshChildren(robotId).length).toBe(2));
});

test('a file corrupted on the robot is found by the inventory and replaced on the next sync', async () => {
  const robot = await addRobot(testRobots()[3]);
  const rfs = [0, 1, 2].map((i) => ({ rel: `c/rf${i}.bin`, rf: cachedRf(64 * 1024) }));
  await perfectState(robot, rfs);
  expect(byRobot((await syncViaApi([robot.id])).result, robot.id).upload!.uploaded.files).toBe(3);

  // Same size, other bytes: only the content (and mtime) tell.
  const victim = path.join(robot.rfRoot, rfs[1].rel);
  const fd = fs.openSync(victim, 'r+');
  fs.writeSync(fd, Buffer.from('corrupted!'), 0, 10, 1000);
  fs.closeSync(fd);
  fs.utimesSync(victim, new Date(), new Date(Date.now() + 5000));
  expect(sha256File(victim)).not.toBe(rfs[1].rf.sha256);

  const r = byRobot((await syncViaApi([robot.id])).result, robot.id);
  expect(r.inventory).toMatchObject({ files: 3, hashed: 1 });
  expect(r.upload).toMatchObject({ skipped: { files: 2 }, uploaded: { files: 1, bytes: 64 * 1024 } });
  expect(sha256File(victim)).toBe(rfs[1].rf.sha256);
  const entry = await db.models.InventoryEntry.findById(`${robot.id}|${victim}`).lean();
  expect(entry?.sha256).toBe(rfs[1].rf.sha256);
});

test('a perfect-state path outside the robot\'s rf_root fails alone, and nothing is written or created outside it', async () => {
  const robot = await addRobot(testRobots()[2]);
  const escape = path.join(path.dirname(robot.rfRoot), `${path.basename(robot.rfRoot)}-escape`);
  const inside = { rel: 'ok/rf.bin', rf: cachedRf(8 * 1024) };
  await perfectState(robot, [inside, { rel: `../${path.basename(escape)}/d/rf.bin`, rf: cachedRf(8 * 1024) }]);
  const r = byRobot((await syncViaApi([robot.id])).result, robot.id);
  expect(r.upload).toMatchObject({ uploaded: { files: 1 }, failed: { files: 1, bytes: 8 * 1024 } });
  expect(r.upload!.failed.errors[0]).toMatchObject({ path: path.join(escape, 'd', 'rf.bin'), error: expect.stringMatching(/outside the robot's rf_root/) });
  expect(sha256File(path.join(robot.rfRoot, inside.rel))).toBe(inside.rf.sha256);
  expect(fs.existsSync(escape)).toBe(false); // not even its directories
});

test('a robot reached by SSH password: the password occurs in no workflow history and no log', async () => {
  const id = uniqueId('pwbot');
  const rfRoot = path.join(pwRobot.root, id);
  const put = await call('PUT', `/robots/${id}`, { host: pwRobot.host, port: pwRobot.port, username: pwRobot.username, credential_ref: `env:${PASSWORD_VAR}`, rf_root: rfRoot });
  expect(put.status).toBe(201);
  expect((await call('POST', `/robots/${id}/connect`)).json).toMatchObject({ connected: true, host_key_sha256: pwRobot.hostKeySha256 });
  const rf = cachedRf(300 * 1024);
  await perfectState({ id, rfRoot }, [{ rel: 'p/q.bin', rf }]);
  const { result } = await syncViaApi([id]);
  expect(byRobot(result, id)).toMatchObject({ status: 'synced', upload: { uploaded: { files: 1 } } });
  expect(sha256File(path.join(rfRoot, 'p/q.bin'))).toBe(rf.sha256);

  // Every history of this file's runs (parents and children) and every log line of its processes.
  // Payloads are bytes in a history: decoded to text, so a password inside any input or result would show.
  const decoded = (h: unknown) =>
    JSON.stringify(h, function (this: Record<string, unknown>, k: string, v: unknown) {
      const raw = this[k];
      return raw instanceof Uint8Array ? Buffer.from(raw).toString('utf8') : v;
    });
  const histories = await eventually('histories of this file\'s runs', async () => {
    const out: string[] = [];
    for await (const wf of temporal.list({ query: `TaskQueue = "${env.OFFLINE_TASK_QUEUE}"` })) {
      out.push(decoded(await temporal.getHandle(wf.workflowId, wf.runId).fetchHistory()));
    }
    return out.some((h) => h.includes(id)) ? out : null;
  });
  expect(histories.length).toBeGreaterThanOrEqual(2);
  for (const h of histories) expect(h).not.toContain(pwRobot.password);
  const output = [...logs, worker.output(), api.output()].join('\n');
  expect(output).toContain('offline worker started');
  expect(output).not.toContain(pwRobot.password);
});

test("cloud sync's applyDownstream marks exactly the robots whose perfect state it changed (robot sync then reads it again)", async () => {
  const robot = await addRobot();
  const center = { ...cfg, offline: { ...cfg.offline, rfCacheDir: rfCache } };
  const apply = createCloudSyncDbActivities({ cfg: center, models: db.models }).applyDownstream;
  const rf = cachedRf(1000);
  const answer = (sha256: string) => ({
    actions: [],
    categories: [],
    skills: [],
    perfect_state: [{ robot_id: robot.id, entries: [{ path: path.join(robot.rfRoot, 'a.bin'), sha256, size: rf.size, url: `https://cloud.invalid/rf/${sha256}` }] }],
  });
  const applyAnswer = async (sha256: string) => {
    const runId = uniqueId('run');
    writeJson(path.join(runDir(centerDirs(center), runId), 'sync-response.json'), answer(sha256));
    await apply({ runId });
    return (await db.models.Robot.findById(robot.id).lean())?.perfect_state_rev;
  };
  const first = await applyAnswer(rf.sha256);
  expect(first).toEqual(expect.any(String));
  const r1 = byRobot((await syncViaApi([robot.id])).result, robot.id);
  expect(r1.upload!.uploaded.files).toBe(1);
  // The same answer again: nothing written, the token stays, and robot sync finds the robot unchanged.
  expect(await applyAnswer(rf.sha256)).toBe(first);
  expect(byRobot((await syncViaApi([robot.id])).result, robot.id).unchanged).toBe(true);
  // Another version of the RF: a new token, and robot sync installs it.
  const v2 = cachedRf(1000);
  const second = await applyAnswer(v2.sha256);
  expect(second).not.toBe(first);
  const r3 = byRobot((await syncViaApi([robot.id])).result, robot.id);
  expect(r3).toMatchObject({ unchanged: false, upload: { uploaded: { files: 1 } } });
  expect(sha256File(path.join(robot.rfRoot, 'a.bin'))).toBe(v2.sha256);
});
