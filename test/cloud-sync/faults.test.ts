// cloudSync under faults, with real processes: the offline worker SIGKILLed in the middle of a large RF download,
// the cloud API down when the run starts, a refused JWT, an outdated app, an RF whose bytes do not match its
// sha256; and the center's JWT searched for in every workflow history these runs wrote.
import fs from 'node:fs';
import path from 'node:path';
import { readDataSet } from '../../api/cloud-sync/seed';
import { newCenterKey, signCenterToken } from '../../api/cloud-sync/auth';
import { DEMO_DATA_SET } from '../../infra/seed';
import { cfg, eventually, sha256File, testRobots } from '../helpers';
import { cacheContents, createCenter, startCloud, type Center, type CloudSide } from './system';

let cloud: CloudSide;
/** Every run of this file, for the history search at the end. */
const runs: { center: Center; workflowId: string; runId: string }[] = [];
const centers: Center[] = [];

beforeAll(async () => {
  cloud = await startCloud();
});
afterAll(async () => {
  for (const c of centers) await c.close();
  await cloud?.close();
});

async function center(o: Parameters<typeof createCenter>[1]): Promise<Center> {
  const c = await createCenter(cloud, o);
  centers.push(c);
  return c;
}

async function run(c: Center) {
  const handle = await c.start();
  runs.push({ center: c, workflowId: handle.workflowId, runId: handle.firstExecutionRunId });
  return handle;
}

test('worker SIGKILL during a large RF download: the run finishes and only the remaining bytes are fetched', async () => {
  const dataSet = { ...readDataSet(DEMO_DATA_SET), large_rfs: [{ name: 'fault-large.bin', size: 200 * 1024 * 1024, path: 'models/fault-large.bin' }] };
  const c = await center({ robots: [testRobots()[2]], dataSet, large: true });
  const large = (await cloud.db.cloudSync.Rf.findById('fault-large.bin').lean())!;
  const part = path.join(c.cacheDir, `${large.sha256}.part`);
  const worker = await c.startWorker();
  const handle = await run(c);
  // Wait for the proof that the download is running: its .part file is past 15% of the RF.
  const atKill = await eventually('large download in flight', async () => {
    const size = fs.existsSync(part) ? fs.statSync(part).size : 0;
    return size > large.size * 0.15 ? size : null;
  }, 120000);
  await worker.kill('SIGKILL');
  expect(fs.statSync(part).size).toBeLessThan(large.size);
  await c.startWorker();
  const result = await handle.result();
  expect(result.outcome).toBe('synced');
  expect(result.rfs).toMatchObject({ failed: [] });
  expect(result.rfs!.resumed).toBeGreaterThanOrEqual(1);
  // The attempt after the kill fetched only what was missing (the small RFs were in the cache already).
  expect(result.rfs!.fetched).toBeLessThanOrEqual(large.size - atKill);
  // The cloud saw two requests for it: from 0, then from where the killed attempt's file ended.
  const requests = cloud.api!.output().split('\n').filter((l) => l.includes('"rf":"fault-large.bin"') && l.includes(`"centerId":"${c.id}"`));
  expect(requests.map((l) => (JSON.parse(l) as { range: string | null }).range)).toEqual([null, expect.stringMatching(/^bytes=\d+-$/)]);
  expect(Number(/bytes=(\d+)-/.exec(requests[1])![1])).toBeGreaterThanOrEqual(atKill);
  expect(sha256File(path.join(c.cacheDir, large.sha256))).toBe(large.sha256);
  expect(cacheContents(c).other).toEqual([]);
}, 300000);

test('cloud API down at the start: the exchange is retried with backoff and the run completes once it is back', async () => {
  const c = await center({ robots: [testRobots()[3]] });
  await c.startWorker();
  await cloud.stopApi();
  try {
    const handle = await run(c);
    await eventually('a retried /sync attempt', async () => {
      const d = await handle.describe();
      return (d.raw.pendingActivities ?? []).some((a) => a.activityType?.name === 'exchangeWithCloud' && (a.attempt ?? 0) >= 2);
    }, 60000);
  } finally {
    await cloud.startApi();
  }
  const result = await c.temporal.workflow.getHandle(runs.at(-1)!.workflowId, runs.at(-1)!.runId).result();
  expect(result.outcome).toBe('synced');
  expect(result.rfs!.downloaded).toBeGreaterThan(0);
});

test('a refused JWT ends the run with a clear authentication failure after one attempt', async () => {
  const c = await center({ robots: [testRobots()[3]] });
  const forged = await signCenterToken(await newCenterKey(), { centerId: c.id, issuer: cfg.api.jwtIssuer, ttl: '1h' });
  await c.startWorker({ CENTER_JWT: forged });
  const handle = await run(c);
  const result = await handle.result();
  expect(result.outcome).toBe('auth_failed');
  expect(result.message).toContain('signature verification failed');
  const history = await handle.fetchHistory();
  const attempts = (history.events ?? []).filter((e) => e.activityTaskStartedEventAttributes).map((e) => e.activityTaskStartedEventAttributes!.attempt);
  expect(attempts.filter((a) => (a ?? 1) > 1)).toEqual([]);
  expect(await c.db.models.downstream.actions.countDocuments()).toBe(0);
});

test('an outdated app gets "outdated_app", applies nothing, and its upstream data is stored after migration', async () => {
  const c = await center({ robots: [testRobots()[3]] });
  const at = new Date('2026-11-20T09:00:00Z');
  await c.db.models.upstream.sessions.create({ _id: 'sess-old-1', updated_at: at, data: { child_id: 'child-old-1', duration_min: 1.5 } });
  await c.db.models.upstream.children.create({ _id: 'child-old-1', updated_at: at, data: { name: 'Ana Maria Lopes' } });
  await cloud.db.cloudSync.VersionMap.updateOne({ _id: '2.0.0' }, { $set: { compatible: false, migrations: ['sessions-duration-minutes-to-seconds', 'children-split-name'] } });
  try {
    await c.startWorker();
    const result = await (await run(c)).result();
    expect(result.outcome).toBe('outdated_app');
    expect(result.message).toContain('outdated');
    expect(result.exchange?.upstream.sessions).toEqual({ inserted: 1, updated: 0, unchanged: 0 });
  } finally {
    await cloud.db.cloudSync.VersionMap.updateOne({ _id: '2.0.0' }, { $set: { compatible: true, migrations: [] } });
  }
  // Nothing applied locally: no catalogue, no perfect state, no file, no cursor.
  expect(await c.db.models.downstream.actions.countDocuments()).toBe(0);
  expect(await c.db.models.PerfectStateEntry.countDocuments()).toBe(0);
  expect(cacheContents(c)).toEqual({ rfs: [], other: [] });
  expect(await c.db.models.SyncState.findById('cloud').lean()).toBeNull();
  // Stored on the cloud in the current shape.
  expect((await cloud.db.cloudSync.sessions.findById(`${c.id}|sess-old-1`).lean())?.data).toEqual({ child_id: 'child-old-1', duration_s: 90 });
  expect((await cloud.db.cloudSync.children.findById(`${c.id}|child-old-1`).lean())?.data).toEqual({ first_name: 'Ana', last_name: 'Maria Lopes' });
});

test('an RF whose bytes do not match its sha256 is retried, reported, and never left in the cache', async () => {
  const c = await center({ robots: [testRobots()[3]] });
  const wrong = 'f'.repeat(64);
  await cloud.db.cloudSync.PerfectState.updateMany({ url: 'rf/face-smile.anim', robot_id: testRobots()[3].id }, { $set: { sha256: wrong } });
  await c.startWorker();
  const result = await (await run(c)).result();
  expect(result.outcome).toBe('synced');
  expect(result.rfs!.failed).toEqual([{ sha256: wrong, error: expect.stringContaining('sha256 mismatch') }]);
  expect(result.message).toContain('1 RF(s) failed verification');
  // Retried before being reported: one request per attempt.
  const requests = cloud.api!.output().split('\n').filter((l) => l.includes('"rf":"face-smile.anim"') && l.includes(`"centerId":"${c.id}"`));
  expect(requests).toHaveLength(3);
  const cache = cacheContents(c);
  expect(cache.rfs).not.toContain(wrong);
  expect(cache.other).toEqual([]);
  expect(cache.rfs.length).toBe(result.rfs!.downloaded);
});

test('the center JWT appears in no workflow history', async () => {
  expect(runs.length).toBeGreaterThanOrEqual(5);
  for (const r of runs) {
    const history = await r.center.temporal.workflow.getHandle(r.workflowId, r.runId).fetchHistory();
    const json = JSON.stringify(history);
    expect(json.length).toBeGreaterThan(1000);
    expect(json).not.toContain(r.center.token);
    // Payloads are base64 in the history: search the decoded form too.
    const decoded = (json.match(/"data":"([A-Za-z0-9+/=]+)"/g) ?? []).map((m) => Buffer.from(m.slice(8, -1), 'base64').toString('utf8')).join('\n');
    expect(decoded).toContain(r.center.id);
    expect(decoded).not.toContain(r.center.token);
    expect(decoded).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\./);
  }
});
