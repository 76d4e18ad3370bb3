// Idempotent bulk upsert of upstream records: keyed by a stable id, the newer `updated_at` wins, sent in chunks
// of <= 50 (FerretDB habit). New records go in with one insert per chunk (no per-record lookup: the common first
// sync costs what a raw insertMany costs); ids that already exist come back as duplicate-key errors and are
// updated only where the incoming record is newer.
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

async function upsertChunk(coll: Collection<UpsertDoc>, docs: UpsertDoc[]): Promise<UpsertCounts> {
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
  const ops: AnyBulkWriteOperation<UpsertDoc>[] = existing.map(({ _id, ...fields }) => ({
    updateOne: { filter: { _id, updated_at: { $lt: fields.updated_at } }, update: { $set: fields } },
  }));
  const r = await coll.bulkWrite(ops, { ordered: false });
  return { inserted, updated: r.modifiedCount, unchanged: existing.length - r.modifiedCount };
}

export async function upsertNewer(coll: Collection<UpsertDoc>, docs: UpsertDoc[]): Promise<UpsertCounts> {
  // The same id twice in one request: the newer one is the record.
  const byId = new Map<string, UpsertDoc>();
  for (const d of docs) {
    const prev = byId.get(d._id);
    if (!prev || prev.updated_at < d.updated_at) byId.set(d._id, d);
  }
  const parts = await mapLimited(chunks([...byId.values()]), UPSERT_CONCURRENCY, (part) => upsertChunk(coll, part));
  const total: UpsertCounts = { inserted: 0, updated: 0, unchanged: docs.length - byId.size };
  for (const p of parts) {
    total.inserted += p.inserted;
    total.updated += p.updated;
    total.unchanged += p.unchanged;
  }
  return total;
}
