// The offline app's skeleton on the real stack: its API and worker start as processes on the center's namespace,
// the demo seeding registers robots once, and the inventory activity lists a real robot over SSH (sshd).
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { connectOfflineDb, type OfflineDb } from '../../common/db';
import { seedOfflineRobots } from '../../api/offline/seed';
import { createRobotInventoryActivities } from '../../activities/ssh/inventory';
import { cfg, fleet, runTs, testRobots, uniqueId, type ChildHandle } from '../helpers';
import { freePort } from '../ota/system';

let db: OfflineDb;
const dbName = uniqueId('center_test').replace(/-/g, '_');

beforeAll(async () => {
  db = await connectOfflineDb(cfg, dbName);
});
afterAll(async () => {
  await db.connection.dropDatabase();
  await db.close();
});

test('offline API and worker start on the center namespace and answer /api/health', async () => {
  const port = await freePort();
  const env = { OFFLINE_MONGO_DB: dbName, OFFLINE_API_PORT: String(port), OFFLINE_TASK_QUEUE: uniqueId('center-test') };
  const procs: ChildHandle[] = [runTs('api/offline/main.ts', env), runTs('workers/offline-worker.ts', env)];
  try {
    await procs[0].waitForOutput('offline API listening', 60000);
    await procs[1].waitForOutput('offline worker started', 60000);
    expect(procs[1].output()).toContain(`"namespace":"${cfg.offline.temporal.namespace}"`);
    const res = await fetch(`http://127.0.0.1:${port}/api/health`);
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ status: 'ok', center_id: cfg.offline.centerId });
  } finally {
    await Promise.all(procs.map((p) => p.kill()));
  }
});

test('seeding adds each robot once and keeps what the specialist changed', async () => {
  const f = fleet();
  const robots = testRobots().slice(0, 2);
  expect(await seedOfflineRobots(db.models, f.clientKeyFile, robots)).toBe(2);
  await db.models.Robot.updateOne({ _id: robots[0].id }, { $set: { connected: false } });
  expect(await seedOfflineRobots(db.models, f.clientKeyFile, robots)).toBe(0);
  const stored = await db.models.Robot.findById(robots[0].id).lean();
  expect(stored).toMatchObject({ connected: false, port: robots[0].ssh.port, credential_ref: `key:${f.clientKeyFile}`, host_key_sha256: robots[0].ssh.hostKeySha256 });
});

test('inventoryRobot lists path, size and sha256 of every file under rf_root, and forgets removed files', async () => {
  const robot = testRobots()[0];
  const root = path.join(robot.root, uniqueId('rf-inventory'));
  const files: Record<string, Buffer> = { 'a.bin': crypto.randomBytes(1000), 'dir/b c.bin': crypto.randomBytes(70000), 'dir/deep/\tt.txt': Buffer.from('x') };
  for (const [rel, body] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
    fs.writeFileSync(path.join(root, rel), body);
  }
  await db.models.Robot.updateOne({ _id: robot.id }, { $set: { rf_root: root } }, { upsert: false });
  const acts = createRobotInventoryActivities({ models: db.models, cfg });
  const result = await acts.inventoryRobot({ robotId: robot.id });
  expect(result).toEqual({ files: 3, bytes: 71001, hashed: 3, removed: 0 });
  const entries = await db.models.InventoryEntry.find({ robot_id: robot.id }).lean();
  const byPath = new Map(entries.map((e) => [e.path, e]));
  for (const [rel, body] of Object.entries(files)) {
    const e = byPath.get(path.join(root, rel));
    expect(e).toMatchObject({ _id: `${robot.id}|${path.join(root, rel)}`, size: body.length, sha256: crypto.createHash('sha256').update(body).digest('hex') });
  }
  fs.rmSync(path.join(root, 'a.bin'));
  // Incremental: the removal is noticed, and nothing unchanged is hashed again.
  expect(await acts.inventoryRobot({ robotId: robot.id })).toEqual({ files: 2, bytes: 70001, hashed: 0, removed: 1 });
  expect(await db.models.InventoryEntry.countDocuments({ robot_id: robot.id })).toBe(2);
  expect((await db.models.Robot.findById(robot.id).lean())?.last_inventory_at).toBeInstanceOf(Date);
  fs.rmSync(root, { recursive: true, force: true });
});
