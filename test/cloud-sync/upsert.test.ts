// The upstream upsert of /sync against the real FerretDB: only records whose incoming `updated_at` is newer are
// rewritten (a stored document that is equal or newer is left untouched, byte for byte), both when the existing
// ids are few (conditional delete + re-insert) and when there are more than one delete batch carries (a projected
// read narrows them first).
import { MongoClient, type Collection } from 'mongodb';
import { upsertNewer, type UpsertDoc } from '../../api/cloud-sync/upsert';
import { cfg, uniqueId } from '../helpers';

let client: MongoClient;
let coll: Collection<UpsertDoc>;
beforeAll(async () => {
  client = await new MongoClient(cfg.mongo.url, { retryWrites: false, serverSelectionTimeoutMS: cfg.mongo.timeoutMs }).connect();
  coll = client.db(cfg.mongo.db).collection<UpsertDoc>(uniqueId('upsert-test'));
});
afterAll(async () => {
  await coll?.drop().catch(() => undefined);
  await client?.close();
});

const at = (day: number) => new Date(Date.UTC(2026, 10, day, 10));
const doc = (center: string, id: string, day: number, n: unknown): UpsertDoc => ({ _id: `${center}|${id}`, center_id: center, updated_at: at(day), data: { n } });

describe.each([
  ['few existing ids: conditional delete per batch', 5000],
  ['more existing ids than a batch: projected read first', 3],
])('%s', (_name, batch) => {
  test('only newer records are rewritten; equal and older copies leave the stored one untouched', async () => {
    const center = uniqueId('center');
    const first = Array.from({ length: 8 }, (_, i) => doc(center, `s-${i}`, 10, i));
    expect(await upsertNewer(coll, first, cfg.mongo.timeoutMs, batch)).toEqual({ inserted: 8, updated: 0, unchanged: 0 });
    // A marker written behind the API's back shows whether a stored document was rewritten.
    await coll.updateMany({ center_id: center }, { $set: { marker: 'stored' } }, { maxTimeMS: cfg.mongo.timeoutMs });

    const second = [
      doc(center, 's-0', 11, 'newer a'), // newer: rewritten
      doc(center, 's-1', 12, 'newer b'), // newer, another updated_at (its own branch of the delete)
      doc(center, 's-2', 10, 'same time'), // equal: kept
      doc(center, 's-3', 9, 'older'), // older: kept
      doc(center, 's-4', 10, 'same time'),
      doc(center, 's-5', 13, 'first copy'), // twice in one request: the newer copy is the record
      doc(center, 's-5', 14, 'second copy'),
      doc(center, 's-new', 10, 'new'), // new: inserted
    ];
    expect(await upsertNewer(coll, second, cfg.mongo.timeoutMs, batch)).toEqual({ inserted: 1, updated: 3, unchanged: 4 });

    const stored = new Map((await coll.find({ center_id: center }, { maxTimeMS: cfg.mongo.timeoutMs }).toArray()).map((d) => [d._id.split('|')[1], d]));
    expect(stored.size).toBe(9);
    const view = (id: string) => ({ n: (stored.get(id)!.data as { n: unknown }).n, at: stored.get(id)!.updated_at, marker: stored.get(id)!.marker ?? null });
    expect(view('s-0')).toEqual({ n: 'newer a', at: at(11), marker: null });
    expect(view('s-1')).toEqual({ n: 'newer b', at: at(12), marker: null });
    expect(view('s-5')).toEqual({ n: 'second copy', at: at(14), marker: null });
    for (const [id, n] of [['s-2', 2], ['s-3', 3], ['s-4', 4], ['s-6', 6], ['s-7', 7]] as const) {
      expect(view(id)).toEqual({ n, at: at(10), marker: 'stored' });
    }
    expect(view('s-new')).toEqual({ n: 'new', at: at(10), marker: null });
  });
});
