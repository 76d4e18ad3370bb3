// Cloud sync end to end on the real stack: the cloud API process, the offline worker process, sshd robots,
// FerretDB, versitygw and the center's Temporal namespace.
import fs from 'node:fs';
import path from 'node:path';
import { rfContent } from '../../api/cloud-sync/seed';
import { eventually, runTs, testRobots } from '../helpers';
import { freePort } from '../ota/system';
import { cacheContents, createCenter, startCloud, type CloudSide } from './system';
import crypto from 'node:crypto';

let cloud: CloudSide;
beforeAll(async () => {
  cloud = await startCloud();
});
afterAll(async () => {
  await cloud.close();
});

async function rfBytes(name: string, size: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of rfContent(name, size)) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

test('first sync inventories the robot, downloads exactly the missing RFs and images; the second downloads 0 bytes', async () => {
  const robot = testRobots()[0];
  const c = await createCenter(cloud, { robots: [robot] });
  try {
    // The robot already holds one RF of its perfect state: the first sync must see it (inventory) and skip it.
    const held = (await cloud.db.cloudSync.PerfectState.find({ robot_id: robot.id }).lean()).find((e) => e.path === 'config/voice.json')!;
    const heldFile = path.join(c.rfRoots.get(robot.id)!, held.path);
    fs.mkdirSync(path.dirname(heldFile), { recursive: true });
    fs.writeFileSync(heldFile, await rfBytes('config-voice.json', held.size));
    await c.startWorker();

    const first = await c.sync();
    expect(first.outcome).toBe('synced');
    expect(first.inventoried).toEqual([{ robotId: robot.id, files: 1, error: null }]);
    const all = await cloud.db.cloudSync.PerfectState.find({ robot_id: robot.id }).lean();
    const expected = all.filter((e) => e._id !== held._id);
    expect(first.rfs).toMatchObject({ missing: expected.length, downloaded: expected.length, satisfied: 1, failed: [] });
    expect(first.rfs!.bytes).toBe(expected.reduce((n, e) => n + e.size, 0));
    expect(first.rfs!.fetched).toBe(first.rfs!.bytes);
    expect(cacheContents(c)).toEqual({ rfs: expected.map((e) => e.sha256).sort(), other: [] });
    for (const e of expected) {
      expect(crypto.createHash('sha256').update(fs.readFileSync(path.join(c.cacheDir, e.sha256))).digest('hex')).toBe(e.sha256);
    }
    const images = await cloud.db.cloudSync.StaticImage.find().lean();
    expect(first.images).toMatchObject({ downloaded: images.length, failed: [] });
    const imageDir = path.join(path.dirname(c.cacheDir), 'images');
    expect(fs.readdirSync(imageDir).sort()).toEqual(images.map((i) => i._id).sort());
    // Downstream data and perfect state are in the local database.
    expect(await c.db.models.downstream.actions.countDocuments()).toBe(await cloud.db.cloudSync.actions.countDocuments());
    const local = await c.db.models.PerfectStateEntry.find({ robot_id: robot.id }).lean();
    expect(local.map((e) => e.path).sort()).toEqual(all.map((e) => path.join(c.rfRoots.get(robot.id)!, e.path)).sort());
    expect(local[0].url).toMatch(new RegExp(`^${cloud.baseUrl}/api/v1/sync/rf/`));

    const second = await c.sync();
    expect(second.outcome).toBe('synced');
    expect(second.inventoried).toEqual([]);
    expect(second.rfs).toMatchObject({ missing: 0, downloaded: 0, bytes: 0, fetched: 0 });
    expect(second.images).toMatchObject({ downloaded: 0, fetched: 0 });
    expect(second.applied!.perfect_state).toMatchObject({ inserted: 0, updated: 0, deleted: 0 });
  } finally {
    await c.close();
  }
});

test('the offline app starts a sync with POST /api/sync, a second click joins it, GET reports the result', async () => {
  const c = await createCenter(cloud, { robots: [testRobots()[1]] });
  const port = await freePort();
  const api = runTs('api/offline/main.ts', { ...c.env, OFFLINE_API_PORT: String(port) });
  try {
    await Promise.all([c.startWorker(), api.waitForOutput('offline API listening', 60000)]);
    const base = `http://127.0.0.1:${port}/api/sync`;
    expect((await fetch(base)).status).toBe(404);
    const first = await fetch(base, { method: 'POST' });
    expect(first.status).toBe(202);
    const started = (await first.json()) as { run_id: string; joined: boolean };
    const second = await fetch(base, { method: 'POST' });
    expect(second.status).toBe(200);
    expect(await second.json()).toMatchObject({ run_id: started.run_id, joined: true });
    const done = await eventually('the sync to complete', async () => {
      const s = (await (await fetch(base)).json()) as { status: string; result: { outcome: string; rfs: { downloaded: number } } | null };
      return s.status === 'COMPLETED' ? s : null;
    }, 120000);
    expect(done.result).toMatchObject({ outcome: 'synced' });
    expect(done.result!.rfs.downloaded).toBeGreaterThan(0);
    const byRun = await fetch(`${base}/${started.run_id}`);
    expect(await byRun.json()).toMatchObject({ run_id: started.run_id, status: 'COMPLETED' });
    expect((await fetch(`${base}/not-a-run`)).status).toBe(400);
  } finally {
    await api.kill();
    await c.close();
  }
});
