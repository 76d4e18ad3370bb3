// A pass-through stream that computes sha256 and size of the bytes flowing through it, so an upload is hashed
// while it streams to S3 (one pass, bounded memory) instead of being read twice like the reference did.
import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';

export class HashingStream extends Transform {
  private readonly hash: Hash = createHash('sha256');
  private bytes = 0;
  private digest: string | null = null;

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    this.digest = this.hash.digest('hex');
    cb();
  }

  /** Valid once the stream has ended. */
  get sha256(): string {
    if (this.digest === null) throw new Error('HashingStream: sha256 read before the stream ended');
    return this.digest;
  }

  /** Not called `size`: lib-storage reads `Body.size` as the total length to expect (0 here would fail it). */
  get byteCount(): number {
    return this.bytes;
  }
}
