// The shared core of POST /file/upload and POST /file/deploy: read the JSON file list, stream each file part to
// S3 under its final name while hashing it, then record the files. All or nothing: when anything fails (count
// mismatch, bad JSON, name collision, S3 or database error, client gone) the objects this request wrote are
// deleted and no row is left, where the reference kept whatever had succeeded. A caller-chosen object name is
// held by one request at a time (upload-locks.ts), so concurrent uploads of one name cannot overwrite each other.
import type { Request } from 'express';
import type { ZodType } from 'zod';
import type { OtaFile } from '../../common/models/ota';
import { HttpError, unprocessable, type ItemDetail } from './errors';
import { readMultipart } from './multipart';
import { deployPathProblem, generateObjectName, objectNameProblem, sanitizeFilename } from './naming';
import { deleteObjectsQuietly, objectExists, streamToS3, type ObjectRef } from './s3';
import type { FileInfo } from './schemas';
import { bucketProblem, type OtaContext } from './types';
import { UploadLocks } from './upload-locks';

export const COUNT_MISMATCH = 'Number of files and file info do not match.';
const NOT_STORED = 'Not stored: another file of this request failed.';

export interface StoredFile {
  info: FileInfo;
  ref: ObjectRef;
  fileName: string;
  sha256: string;
  size: number;
}

/** A failure tied to one entry of the file list; answered as the reference's per-item detail list. */
export class ItemError extends Error {
  override name = 'ItemError';
  constructor(
    readonly index: number,
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export interface ReceiveSpec<L extends { file_list: FileInfo[] }> {
  schema: ZodType<L>;
  /** Extra per-item checks (deploy: robot_id, deploy_path); return a message naming the field, or null. */
  checkItem?: (info: L['file_list'][number], index: number) => string | null;
  /** Deploy answers carry `job_id` in every item of an error list. */
  withJobId: boolean;
}

export interface Received<L extends { file_list: FileInfo[] }> {
  list: L;
  stored: StoredFile[];
  fields: Record<string, string>;
  /**
   * Releases the caller-chosen names this request holds (upload-locks.ts). Call once the rows are recorded or
   * the request has failed (in a `finally`); never throws.
   */
  release(): Promise<void>;
}

const FIELD = 'file_info_list';

/** The configured upload size limits (API_UPLOAD_MAX_FILE_BYTES, API_UPLOAD_MAX_REQUEST_BYTES) for readMultipart. */
export const uploadLimits = (ctx: OtaContext): { maxFileBytes: number; maxRequestBytes: number } => ({
  maxFileBytes: ctx.cfg.api.uploadMaxFileBytes,
  maxRequestBytes: ctx.cfg.api.uploadMaxRequestBytes,
});

/** A multipart form field holding JSON (the reference's convention): invalid JSON or shape → 422 naming the field. */
export function parseJsonField<T>(raw: string, field: string, schema: ZodType<T>): T {
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch (e) {
    throw new HttpError(422, `${field}: invalid JSON (${e instanceof Error ? e.message : String(e)})`);
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) throw unprocessable(parsed.error, field);
  return parsed.data;
}

/**
 * Reads the multipart request and streams its files to S3. On failure every object written so far is deleted
 * before the error propagates.
 */
export async function receiveFiles<L extends { file_list: FileInfo[] }>(
  ctx: OtaContext,
  req: Request,
  spec: ReceiveSpec<L>,
): Promise<Received<L>> {
  // Set by onMeta inside the reader's callbacks (an object, so TypeScript does not narrow it to null).
  const state: { list: L | null } = { list: null };
  const stored: StoredFile[] = [];
  const written: ObjectRef[] = [];
  const locks = new UploadLocks(ctx);
  try {
    const { fields, fileCount, metaSeen } = await readMultipart(req, {
      metaField: FIELD,
      fileField: 'files',
      maxFiles: ctx.options.maxFilesPerRequest,
      ...uploadLimits(ctx),
      onMeta(raw) {
        const parsed = parseJsonField(raw, FIELD, spec.schema);
        const seen = new Set<string>();
        parsed.file_list.forEach((info, i) => {
          const at = `${FIELD}.file_list.${i}`;
          const bucket = bucketProblem(ctx, info.s3_bucket);
          if (bucket) throw new HttpError(400, `${at}.s3_bucket: ${bucket}`);
          if (info.s3_object_name) {
            const problem = objectNameProblem(info.s3_object_name);
            if (problem) throw new HttpError(400, `${at}.s3_object_name: ${problem}`);
            const key = `${info.s3_bucket}/${info.s3_object_name}`;
            if (seen.has(key)) throw new HttpError(400, `${at}.s3_object_name: appears twice in this request`);
            seen.add(key);
          }
          if (info.deploy_path) {
            const problem = deployPathProblem(info.deploy_path);
            if (problem) throw new HttpError(400, `${at}.deploy_path: ${problem}`);
          }
          const extra = spec.checkItem?.(info, i);
          if (extra) throw new HttpError(400, `${at}.${extra}`);
        });
        state.list = parsed;
      },
      async onFile(file, signal) {
        const current = state.list;
        if (!current) throw new HttpError(400, `${FIELD}: must be sent before the "files" file parts`);
        if (file.index >= current.file_list.length) throw new HttpError(400, COUNT_MISMATCH);
        const info = current.file_list[file.index];
        const safeName = sanitizeFilename(file.filename);
        let ref: ObjectRef;
        let fileName: string;
        if (info.s3_object_name) {
          ref = { bucket: info.s3_bucket, key: info.s3_object_name };
          fileName = safeName || info.s3_object_name;
          // A chosen name must be new: the reference refused an existing row; we also refuse an existing object,
          // which this request would otherwise overwrite (and then delete on rollback). The name is held first, so
          // no concurrent request can be writing it between this check and our row (upload-locks.ts).
          const taken =
            !(await locks.acquire(ref.bucket, ref.key)) ||
            (await ctx.models.OtaFile.exists({ s3_bucket: ref.bucket, s3_object_name: ref.key })) !== null ||
            (await objectExists(ctx.s3, ref));
          if (taken) throw new ItemError(file.index, 400, `Object ${ref.key} in bucket ${ref.bucket} already exists.`);
        } else {
          const generated = generateObjectName(safeName);
          ref = { bucket: info.s3_bucket, key: generated.objectName };
          fileName = generated.fileName;
        }
        // Recorded before the bytes flow: an upload cut short by another part's failure may still have landed
        // (a PUT the server completed as we aborted it), and the rollback must delete it too.
        written.push(ref);
        const { sha256, size } = await streamToS3(ctx.s3, ref, file.stream, {
          partSizeBytes: ctx.options.partSizeBytes,
          queueSize: ctx.options.uploadQueueSize,
          signal,
        }).catch((e: unknown) => {
          if (e instanceof HttpError || e instanceof ItemError || signal.aborted) throw e;
          ctx.log.warn({ err: e, bucket: ref.bucket, key: ref.key }, 'upload to S3 failed');
          throw new ItemError(file.index, ...s3Failure(e, ref));
        });
        stored[file.index] = { info, ref, fileName, sha256, size };
      },
    });
    const l = state.list;
    if (!metaSeen || !l) throw new HttpError(422, `${FIELD}: Field required`);
    if (fileCount === 0 && l.file_list.length === 0) throw new HttpError(422, 'files: Field required');
    if (fileCount !== l.file_list.length) throw new HttpError(400, COUNT_MISMATCH);
    return { list: l, stored, fields, release: () => locks.releaseAll() };
  } catch (e) {
    await deleteObjectsQuietly(ctx.s3, written, ctx.log);
    await locks.releaseAll();
    throw itemErrorToHttp(e, state.list ? state.list.file_list : null, spec.withJobId);
  }
}

function s3Failure(e: unknown, ref: ObjectRef): [number, string] {
  const name = e instanceof Error ? e.name : 'Error';
  if (name === 'NoSuchBucket') return [400, `Bucket ${ref.bucket} does not exist.`];
  return [502, `Upload of ${ref.key} to bucket ${ref.bucket} failed (${name}).`];
}

export function fileDoc(s: StoredFile, timestamp: Date): OtaFile {
  return {
    s3_bucket: s.ref.bucket,
    s3_object_name: s.ref.key,
    file_name: s.fileName,
    timestamp,
    robot_id: s.info.robot_id,
    robot_type: s.info.robot_type,
    robot_version: s.info.robot_version,
    deploy_path: s.info.deploy_path,
    sha256: s.sha256,
    size: s.size,
    file_metadata: s.info.file_metadata,
    valid: true,
    version: 'v1',
  };
}

const isDuplicateKey = (e: unknown): boolean => typeof e === 'object' && e !== null && (e as { code?: unknown }).code === 11000;

/**
 * Records the stored files (one timestamp per request, like the reference), one insert at a time so a failure
 * knows exactly what to undo: the rows and objects of this request are removed — except the object whose name
 * another concurrent request recorded first (duplicate key), which belongs to that request now.
 */
export async function recordFiles(ctx: OtaContext, stored: readonly StoredFile[], timestamp: Date): Promise<OtaFile[]> {
  const docs = stored.map((s) => fileDoc(s, timestamp));
  const inserted: OtaFile[] = [];
  try {
    for (const doc of docs) {
      await ctx.models.OtaFile.create(doc);
      inserted.push(doc);
    }
    return docs;
  } catch (e) {
    const failedAt = inserted.length;
    const clash = isDuplicateKey(e) ? failedAt : -1;
    await removeFiles(ctx, inserted);
    await deleteObjectsQuietly(
      ctx.s3,
      stored.filter((_, i) => i >= failedAt && i !== clash).map((s) => s.ref),
      ctx.log,
    );
    if (clash >= 0) {
      const d = docs[clash];
      throw new ItemError(clash, 400, `Object ${d.s3_object_name} in bucket ${d.s3_bucket} already exists.`);
    }
    throw e;
  }
}

/** Deletes rows (by key) and objects of files this request recorded; used when a later step fails. */
export async function removeFiles(ctx: OtaContext, files: readonly OtaFile[]): Promise<void> {
  if (files.length === 0) return;
  await ctx.models.OtaFile.deleteMany({
    $or: files.map((f) => ({ s3_bucket: f.s3_bucket, s3_object_name: f.s3_object_name })),
  }).catch((err: unknown) => ctx.log.error({ err }, 'could not remove file rows of a failed request'));
  await deleteObjectsQuietly(
    ctx.s3,
    files.map((f) => ({ bucket: f.s3_bucket, key: f.s3_object_name })),
    ctx.log,
  );
}

/** The reference's 400 body for a failed batch: one entry per file-list item, the failing one with its reason. */
export function itemsDetail(infos: readonly FileInfo[], err: ItemError, withJobId: boolean): ItemDetail[] {
  return infos.map((info, i) => ({
    s3_bucket: info.s3_bucket,
    s3_object_name: info.s3_object_name,
    robot_id: info.robot_id,
    deploy_path: info.deploy_path,
    filename: '',
    state: 'FAILED',
    error_msg: i === err.index ? err.message : NOT_STORED,
    ...(withJobId ? { job_id: '' } : {}),
  }));
}

/** Turns a per-item failure into the reference's error body: a list with one entry per file-list item. */
export function itemErrorToHttp(e: unknown, infos: readonly FileInfo[] | null, withJobId: boolean): unknown {
  if (!(e instanceof ItemError)) return e;
  if (!infos) return new HttpError(e.status, e.message);
  return new HttpError(e.status, itemsDetail(infos, e, withJobId));
}
