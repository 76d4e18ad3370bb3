// Idempotent bulk upsert of upstream records: keyed by a stable id, the newer `updated_at` wins, sent in chunks
// of <= 50 (FerretDB habit). New records go in with one insert per chunk (no per-record lookup: the common first
// sync costs what a raw insertMany costs); ids that already exist come back as duplicate-key errors, their
// stored `updated_at` is read in one query, and only the ones the incoming record is newer than are written,
// each filtered by `_id` alone: FerretDB pushes an `_id` equality down to its index but scans the whole
// collection for `{_id, updated_at: {$lt: ...}}` (measured: 22 updates 3.5 s vs 0.28 s at 2,200 documents).
// Between the read and the write a concurrent sync of the same center could land a newer copy; the offline
// app runs one cloud sync per center at a time (fixed workflow id), so that does not happen.
import { MongoBulkWriteError, type AnyBulkWriteOperation, type Collection } from 'mongodb';
import { chunks } from '../../common/db';
import { mapLimited } from '../ota/jobs-service';

export interface UpsertDoc {
  _id: string;
  updated_at: Date;
  [field: string]: unknown;
}

export interface UpsertCounts {
  inserted: number;
  updated: number;
  unchanged: number;
}

const DUPLICATE_KEY = 11000;
/** Chunks in flight at once: enough to hide round trips, few enough for FerretDB's single writer. */
export const UPSERT_CONCURRENCY = 4;

async function upsertChunk(coll: Collection<UpsertDoc>, docs: UpsertDoc[], timeoutMs: number): Promise<UpsertCounts> {
  let existing: UpsertDoc[] = [];
  let inserted = docs.length;
  try {
    await coll.insertMany(docs, { ordered: false });
  } catch (e) {
    if (!(e instanceof MongoBulkWriteError)) throw e;
    const errs = Array.isArray(e.writeErrors) ? e.writeErrors : [e.writeErrors];
    const other = errs.find((w) => w.code !== DUPLICATE_KEY);
    if (other) throw e;
    existing = errs.map((w) => docs[w.index]);
    inserted = docs.length - existing.length;
  }
  if (!existing.length) return { inserted, updated: 0, unchanged: 0 };
  // One query per chunk. MongoDB answers it from the _id index; FerretDB scans the collection once per query
  // (cheaper than 50 lookups, each also a scan there), hence the longer time limit.
  const stored = await coll.find({ _id: { $in: existing.map((d) => d._id) } }, { projection: { updated_at: 1 }, maxTimeMS: timeoutMs * 3 }).toArray();
  const storedAt = new Map(stored.map((d) => [d._id, d.updated_at]));
  const newer = existing.filter((d) => !(storedAt.get(d._id)! >= d.updated_at));
  if (newer.length) {
    const ops: AnyBulkWriteOperation<UpsertDoc>[] = newer.map(({ _id, ...fields }) => ({ updateOne: { filter: { _id }, update: { $set: fields } } }));
    await coll.bulkWrite(ops, { ordered: false });
  }
  return { inserted, updated: newer.length, unchanged: existing.length - newer.length };
}

export async function upsertNewer(coll: Collection<UpsertDoc>, docs: UpsertDoc[], timeoutMs: number): Promise<UpsertCounts> {
  // The same id twice in one request: the newer one is the record.
  const byId = new Map<string, UpsertDoc>();
  for (const d of docs) {
    const prev = byId.get(d._id);
    if (!prev || prev.updated_at < d.updated_at) byId.set(d._id, d);
  }
  const parts = await mapLimited(chunks([...byId.values()]), UPSERT_CONCURRENCY, (part) => upsertChunk(coll, part, timeoutMs));
  const total: UpsertCounts = { inserted: 0, updated: 0, unchanged: docs.length - byId.size };
  for (const p of parts) {
    total.inserted += p.inserted;
    total.updated += p.updated;
    total.unchanged += p.unchanged;
  }
  return total;
}
