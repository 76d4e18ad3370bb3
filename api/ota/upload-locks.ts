// Caller-chosen object names are held by one upload at a time. Without this, two concurrent requests for the same
// `s3_object_name` both passed the "is it taken?" check, both wrote the object (the second overwriting the first's
// bytes) and only one row was recorded. S3's own `If-None-Match: *` does not close the race on every store
// (versitygw 1.7 lets two concurrent conditional PUTs of one key both succeed), so the database decides: a lock
// document whose _id is the (bucket, key) pair is inserted before the name is checked and the bytes flow; the
// loser of the insert (duplicate key) fails at once. The lock is held until the request's rows are recorded or
// rolled back, and is a lease: renewed while the upload runs, taken over once expired (a crashed holder).
import { createHash, randomUUID } from 'node:crypto';
import { Schema, type Connection, type Model } from 'mongoose';
import { chunks } from '../../common/db';
import type { OtaContext } from './types';

export interface UploadLock {
  _id: string;
  bucket: string;
  key: string;
  owner: string;
  expires_at: Date;
}

const uploadLockSchema = new Schema<UploadLock>(
  {
    _id: { type: String, required: true },
    bucket: { type: String, required: true },
    key: { type: String, required: true },
    owner: { type: String, required: true },
    expires_at: { type: Date, required: true },
  },
  { collection: 'ota_upload_locks', versionKey: false },
);

/** The model on `conn` (registered once per connection). */
export function uploadLockModel(conn: Connection): Model<UploadLock> {
  return (conn.models.OtaUploadLock as Model<UploadLock> | undefined) ?? conn.model<UploadLock>('OtaUploadLock', uploadLockSchema);
}

/** Fixed-length id for a (bucket, key) pair: keys may be up to 1024 bytes. */
export const uploadLockId = (bucket: string, key: string): string => createHash('sha256').update(`${bucket}\n${key}`).digest('hex');

const isDuplicateKey = (e: unknown): boolean => typeof e === 'object' && e !== null && (e as { code?: unknown }).code === 11000;

/** The names one request holds; `releaseAll` when its rows are recorded or rolled back. */
export class UploadLocks {
  private readonly owner = randomUUID();
  private readonly held = new Set<string>();
  private readonly Lock: Model<UploadLock>;
  private renewTimer: NodeJS.Timeout | null = null;

  constructor(private readonly ctx: OtaContext) {
    this.Lock = uploadLockModel(ctx.models.OtaFile.db);
  }

  private expiry(): Date {
    return new Date(Date.now() + this.ctx.options.uploadLockTtlMs);
  }

  /** True when this request now holds the name; false when another live upload holds it. */
  async acquire(bucket: string, key: string): Promise<boolean> {
    const _id = uploadLockId(bucket, key);
    try {
      await this.Lock.create({ _id, bucket, key, owner: this.owner, expires_at: this.expiry() });
    } catch (e) {
      if (!isDuplicateKey(e)) throw e;
      // Held: ours only if the holder's lease ran out (it crashed or hung) and we win the takeover.
      const taken = await this.Lock.updateOne(
        { _id, expires_at: { $lt: new Date() } },
        { $set: { owner: this.owner, expires_at: this.expiry() } },
      ).maxTimeMS(this.ctx.cfg.mongo.timeoutMs);
      if (taken.modifiedCount !== 1) return false;
      this.ctx.log.warn({ bucket, key }, 'took over an expired upload lock');
    }
    this.held.add(_id);
    this.startRenewing();
    return true;
  }

  private startRenewing(): void {
    if (this.renewTimer) return;
    const every = Math.max(1000, Math.floor(this.ctx.options.uploadLockTtlMs / 3));
    this.renewTimer = setInterval(() => {
      void (async () => {
        for (const ids of chunks([...this.held])) {
          await this.Lock.updateMany({ _id: { $in: ids }, owner: this.owner }, { $set: { expires_at: this.expiry() } }).maxTimeMS(
            this.ctx.cfg.mongo.timeoutMs,
          );
        }
      })().catch((err: unknown) => this.ctx.log.warn({ err }, 'could not renew upload locks'));
    }, every);
    this.renewTimer.unref();
  }

  /** Releases every name this request holds (only while still ours). Never throws: an unreleased lock expires. */
  async releaseAll(): Promise<void> {
    if (this.renewTimer) clearInterval(this.renewTimer);
    this.renewTimer = null;
    if (this.held.size === 0) return;
    const ids = [...this.held];
    this.held.clear();
    try {
      for (const part of chunks(ids)) await this.Lock.deleteMany({ _id: { $in: part }, owner: this.owner }).maxTimeMS(this.ctx.cfg.mongo.timeoutMs);
    } catch (err) {
      this.ctx.log.warn({ err }, 'could not release upload locks; they expire');
    }
  }
}
