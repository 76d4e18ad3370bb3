// S3 operations of the OTA API and how their failures map to HTTP: a problem with the request (no such bucket,
// bad key) is the caller's (4xx, like the reference's 400 with the S3 message); anything else means the store
// is unavailable (502), never a bare 500.
import { DeleteObjectCommand, HeadObjectCommand, S3ServiceException, type S3Client } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Logger } from '../../common/logger';
import { HttpError } from './errors';
import { HashingStream } from './hashing';

export interface ObjectRef {
  bucket: string;
  key: string;
}

const s3Status = (e: unknown): number | undefined =>
  e instanceof S3ServiceException ? e.$metadata.httpStatusCode : undefined;

export const isS3NotFound = (e: unknown): boolean =>
  e instanceof S3ServiceException && (e.name === 'NoSuchKey' || e.name === 'NotFound' || e.$metadata.httpStatusCode === 404);

export function s3HttpError(e: unknown, ref: Partial<ObjectRef>): HttpError {
  if (e instanceof HttpError) return e;
  const name = e instanceof Error ? e.name : 'Error';
  if (name === 'NoSuchBucket') return new HttpError(400, `Bucket ${ref.bucket ?? ''} does not exist.`);
  const status = s3Status(e);
  if (status !== undefined && status >= 400 && status < 500 && status !== 403) {
    return new HttpError(400, `S3 refused the request (${name}): ${e instanceof Error ? e.message : ''}`.trim());
  }
  return new HttpError(502, `Object storage unavailable (${name})`);
}

/** True when an object exists; a 404 is an answer, other failures are errors. */
export async function objectExists(s3: S3Client, ref: ObjectRef): Promise<boolean> {
  try {
    await s3.send(new HeadObjectCommand({ Bucket: ref.bucket, Key: ref.key }));
    return true;
  } catch (e) {
    if (isS3NotFound(e)) return false;
    throw s3HttpError(e, ref);
  }
}

export interface StreamedObject {
  sha256: string;
  size: number;
}

export interface StreamOptions {
  partSizeBytes: number;
  queueSize: number;
  signal: AbortSignal;
}

/**
 * Streams `source` into S3 while hashing it. lib-storage sends one PUT for small bodies and a multipart upload
 * for large ones, holding at most partSize x queueSize bytes; on any failure (source error, abort, S3 error) the
 * multipart upload is aborted, so a failed stream leaves no object and no orphaned parts behind.
 */
export async function streamToS3(s3: S3Client, ref: ObjectRef, source: Readable, o: StreamOptions): Promise<StreamedObject> {
  const hasher = new HashingStream();
  const upload = new Upload({
    client: s3,
    params: { Bucket: ref.bucket, Key: ref.key, Body: hasher, ContentType: 'application/octet-stream' },
    partSize: o.partSizeBytes,
    queueSize: o.queueSize,
    leavePartsOnError: false,
  });
  const onAbort = () => {
    hasher.destroy(o.signal.reason instanceof Error ? o.signal.reason : new Error('upload aborted'));
    void upload.abort().catch(() => undefined);
  };
  if (o.signal.aborted) onAbort();
  o.signal.addEventListener('abort', onAbort, { once: true });
  try {
    const piping = pipeline(source, hasher);
    // If S3 fails first the hasher is destroyed, which ends the pipeline (and drains nothing further from source).
    const uploading = upload.done().catch((e: unknown) => {
      hasher.destroy(e instanceof Error ? e : new Error(String(e)));
      throw e;
    });
    await Promise.all([piping, uploading]);
    return { sha256: hasher.sha256, size: hasher.byteCount };
  } catch (e) {
    await upload.abort().catch(() => undefined);
    throw e;
  } finally {
    o.signal.removeEventListener('abort', onAbort);
  }
}

/** Best-effort removal of objects a failed request wrote; failures are logged (they are orphans, not errors). */
export async function deleteObjectsQuietly(s3: S3Client, refs: readonly ObjectRef[], log: Logger): Promise<void> {
  await Promise.all(
    refs.map(async (ref) => {
      try {
        await s3.send(new DeleteObjectCommand({ Bucket: ref.bucket, Key: ref.key }));
      } catch (err) {
        log.warn({ err, bucket: ref.bucket, key: ref.key }, 'could not delete an object of a failed request');
      }
    }),
  );
}
