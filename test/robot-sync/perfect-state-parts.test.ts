// A robot's perfect state as robot sync reads it (common/models/offline.ts): the compact parts written by
// markPerfectStateChanged, against the real FerretDB. They must always say what the entries say, and a reader
// whose parts were replaced meanwhile must fall back to the entries, never read a mix or nothing.
import { connectOfflineDb, type OfflineDb } from '../../common/db';
import { markPerfectStateChanged, ORPHAN_PART_AGE_MS, PERFECT_STATE_PART, readPerfectState, type OfflineRobot, type WantedRf } from '../../common/models/offline';
import { cfg, uniqueId } from '../helpers';

let db: OfflineDb;

beforeAll(async () => {
  db = await connectOfflineDb(cfg, `parts_${uniqueId('ps').replace(/-/g, '_')}`);
});

afterAll(async () => {
  await db?.connection.dropDatabase().catch(() => undefined);
  await db?.close();
});

const sorted = (rows: WantedRf[]) => rows.map((r) => ({ path: r.path, sha256: r.sha256, size: r.size })).sort((a, b) => a.path.localeCompare(b.path));

async function robotWithEntries(count: number): Promise<{ id: string; entries: WantedRf[] }> {
  const id = uniqueId('bot');
  await db.models.Robot.create({ _id: id, host: '127.0.0.1', port: 22, username: 'root', credential_ref: 'key:/dev/null', rf_root: '/srv/rf' });
  // Paths with the characters a JSON row must carry: tabs, quotes, newlines, non-ASCII.
  const entries = Array.from({ length: count }, (_, i) => ({ path: `/srv/rf/d${i % 7}/f${i}${i % 5 === 0 ? '\t"q"\n é' : ''}.bin`, sha256: i.toString(16).padStart(64, '0'), size: i * 3 }));
  for (let i = 0; i < entries.length; i += 500) {
    await db.models.PerfectStateEntry.insertMany(entries.slice(i, i + 500).map((e) => ({ _id: `${id}|${e.path}`, robot_id: id, ...e, url: 'https://cloud.invalid/x', updated_at: new Date() })));
  }
  return { id, entries };
}

const robotDoc = async (id: string) => (await db.models.Robot.findById(id).lean<OfflineRobot>())!;
const partsOf = (id: string) => db.models.PerfectStatePart.find({ robot_id: id }).lean();

test('marking a robot stores its entries as parts under the new token, and they read back as the entries', async () => {
  const { id, entries } = await robotWithEntries(2 * PERFECT_STATE_PART + 321);
  await markPerfectStateChanged(db.models, [id]);
  const robot = await robotDoc(id);
  expect(robot.perfect_state_rev).toEqual(expect.any(String));
  expect(robot.perfect_state_parts).toBe(3);
  const parts = await partsOf(id);
  expect(parts.map((p) => p.rev)).toEqual([robot.perfect_state_rev, robot.perfect_state_rev, robot.perfect_state_rev]);
  expect(sorted(await readPerfectState(db.models, robot))).toEqual(sorted(entries));

  // Marked again: a new token, its own parts, the replaced ones gone.
  await markPerfectStateChanged(db.models, [id]);
  const again = await robotDoc(id);
  expect(again.perfect_state_rev).not.toBe(robot.perfect_state_rev);
  expect((await partsOf(id)).map((p) => p.rev)).toEqual([again.perfect_state_rev, again.perfect_state_rev, again.perfect_state_rev]);
  expect(sorted(await readPerfectState(db.models, again))).toEqual(sorted(entries));
});

test('an empty perfect state is zero parts; marks at the same time end on parts that match the entries', async () => {
  const { id } = await robotWithEntries(10);
  await db.models.PerfectStateEntry.deleteMany({ robot_id: id });
  await markPerfectStateChanged(db.models, [id]);
  const robot = await robotDoc(id);
  expect(robot.perfect_state_parts).toBe(0);
  expect(await partsOf(id)).toEqual([]);
  expect(await readPerfectState(db.models, robot)).toEqual([]);

  // Entries written, then three writers mark at once: whichever token wins, its parts are there and are the entries.
  const entries = [{ path: '/srv/rf/a.bin', sha256: 'c'.repeat(64), size: 3 }, { path: '/srv/rf/b.bin', sha256: 'd'.repeat(64), size: 4 }];
  await db.models.PerfectStateEntry.insertMany(entries.map((e) => ({ _id: `${id}|${e.path}`, robot_id: id, ...e, url: 'https://cloud.invalid/x', updated_at: new Date() })));
  await Promise.all([1, 2, 3].map(() => markPerfectStateChanged(db.models, [id])));
  const after = await robotDoc(id);
  expect(after.perfect_state_parts).toBe(1);
  expect((await partsOf(id)).filter((p) => p.rev === after.perfect_state_rev)).toHaveLength(1);
  expect(sorted(await readPerfectState(db.models, after))).toEqual(sorted(entries));
});

test('a reader whose parts were replaced, or a robot never marked, reads the entries', async () => {
  const { id, entries } = await robotWithEntries(PERFECT_STATE_PART + 1);
  await markPerfectStateChanged(db.models, [id]);
  const seen = await robotDoc(id);
  // Another writer marks the robot between this reader's robot read and its part reads.
  await markPerfectStateChanged(db.models, [id]);
  expect(sorted(await readPerfectState(db.models, seen))).toEqual(sorted(entries));
  // Never marked (data from before the parts existed): no token, no parts.
  const old = await robotWithEntries(3);
  expect(sorted(await readPerfectState(db.models, await robotDoc(old.id)))).toEqual(sorted(old.entries));
});

test('marking an unknown robot leaves no parts behind', async () => {
  const id = uniqueId('ghost');
  await db.models.PerfectStateEntry.create({ _id: `${id}|/x`, robot_id: id, path: '/x', sha256: 'b'.repeat(64), size: 1, url: 'https://cloud.invalid/x', updated_at: new Date() });
  await markPerfectStateChanged(db.models, [id]);
  expect(await partsOf(id)).toEqual([]);
});

test('a mark sweeps the parts that writers which died before their token left, not a concurrent writer\'s recent ones', async () => {
  const { id, entries } = await robotWithEntries(5);
  const other = await robotWithEntries(2);
  const part = (owner: string, rev: string, writtenAt?: Date) => ({ _id: `${owner}:${rev}:0`, robot_id: owner, rev, entries: '[]', ...(writtenAt ? { written_at: writtenAt } : {}) });
  const old = new Date(Date.now() - ORPHAN_PART_AGE_MS - 60_000);
  await db.models.PerfectStatePart.insertMany([
    part(id, 'died-long-ago', old),
    part(id, 'written-before-timestamps'),
    part(id, 'in-flight', new Date()),
    part(other.id, 'another-robots-orphan', old),
  ]);
  await markPerfectStateChanged(db.models, [id]);
  const robot = await robotDoc(id);
  expect((await partsOf(id)).map((p) => p.rev).sort()).toEqual(['in-flight', robot.perfect_state_rev].sort());
  expect((await partsOf(other.id)).map((p) => p.rev)).toEqual(['another-robots-orphan']);
  expect(sorted(await readPerfectState(db.models, robot))).toEqual(sorted(entries));
});
