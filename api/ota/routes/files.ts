// File endpoints: upload, list, download, update, delete, validate/invalidate (reference §1.1, 1.2, 1.5-1.8).
import { DeleteObjectCommand } from '@aws-sdk/client-s3';
import { Router, type Request, type Response } from 'express';
import type { OtaFile } from '../../../common/models/ota';
import { HttpError } from '../errors';
import { parseParams, requireOtaBucket } from '../http';
import { readMultipart } from '../multipart';
import { deployPathProblem, METADATA_KEY_PATTERN, sanitizeFilename } from '../naming';
import { streamS3Object } from '../../s3-download';
import { isS3NotFound, s3HttpError, streamToS3 } from '../s3';
import {
  fileInfoListSchema,
  fileUpdateSchema,
  listQuerySchema,
  objectQuerySchema,
  type FileUpdate,
  type FileUploadResult,
} from '../schemas';
import type { OtaContext } from '../types';
import { parseJsonField, receiveFiles, recordFiles, itemErrorToHttp } from '../upload';
import { fileRow } from '../views';

const FILE_NOT_FOUND = 'File not found';

/** `file_metadata` filter of GET /file/list: a JSON object of string values (the reference answered 500 otherwise). */
function metadataFilter(raw: string): Record<string, string> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw new HttpError(400, 'file_metadata: must be a JSON object, e.g. {"type":"image"}');
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new HttpError(400, 'file_metadata: must be a JSON object, e.g. {"type":"image"}');
  }
  const filter: Record<string, string> = {};
  for (const [k, v] of Object.entries(parsed as Record<string, unknown>)) {
    if (!METADATA_KEY_PATTERN.test(k)) throw new HttpError(400, `file_metadata: key "${k}" is not a valid metadata key`);
    if (typeof v !== 'string') throw new HttpError(400, `file_metadata.${k}: must be a string`);
    filter[`file_metadata.${k}`] = v;
  }
  return filter;
}

async function findFile(ctx: OtaContext, bucket: string, key: string): Promise<OtaFile | null> {
  return ctx.models.OtaFile.findOne({ s3_bucket: bucket, s3_object_name: key }).lean<OtaFile>();
}

async function streamDownload(ctx: OtaContext, file: OtaFile, req: Request, res: Response): Promise<void> {
  const obj = { bucket: file.s3_bucket, key: file.s3_object_name, size: file.size, fileName: file.file_name };
  await streamS3Object(ctx.s3, ctx.log, obj, req, res);
}

export function filesRouter(ctx: OtaContext): Router {
  const r = Router();

  r.post('/file/upload', async (req, res) => {
    const { list, stored, release } = await receiveFiles(ctx, req, { schema: fileInfoListSchema, withJobId: false });
    try {
      await recordFiles(ctx, stored, new Date());
    } catch (e) {
      throw itemErrorToHttp(e, list.file_list, false);
    } finally {
      await release();
    }
    const body: FileUploadResult[] = stored.map((s) => ({
      s3_bucket: s.ref.bucket,
      s3_object_name: s.ref.key,
      robot_id: s.info.robot_id,
      deploy_path: s.info.deploy_path,
      filename: s.fileName,
      state: 'UPLOADED',
      error_msg: null,
      sha256: s.sha256,
      size: s.size,
    }));
    res.json(body);
  });

  r.get('/file/list', async (req, res) => {
    const q = parseParams(listQuerySchema, req.query);
    if (q.s3_bucket !== undefined) requireOtaBucket(ctx, q.s3_bucket);
    const filter: Record<string, string> = {};
    for (const k of ['s3_bucket', 's3_object_name', 'robot_id', 'robot_type', 'deploy_path'] as const) {
      const v = q[k];
      if (v !== undefined) filter[k] = v;
    }
    if (q.file_metadata !== undefined) Object.assign(filter, metadataFilter(q.file_metadata));
    const rows = await ctx.models.OtaFile.find(filter).sort({ timestamp: -1, _id: -1 }).lean<OtaFile[]>();
    res.json(rows.map(fileRow));
  });

  r.get('/file/download', async (req, res) => {
    const q = parseParams(objectQuerySchema, req.query);
    requireOtaBucket(ctx, q.s3_bucket);
    const file = await findFile(ctx, q.s3_bucket, q.s3_object_name);
    if (!file) throw new HttpError(404, FILE_NOT_FOUND);
    await streamDownload(ctx, file, req, res);
  });

  r.patch('/file/update', async (req, res) => {
    const holder: { update: FileUpdate | null; content: { sha256: string; size: number; fileName: string } | null } = {
      update: null,
      content: null,
    };
    await readMultipart(req, {
      metaField: 'file_info',
      fileField: 'file',
      maxFiles: 1,
      onMeta(raw) {
        const u = parseJsonField(raw, 'file_info', fileUpdateSchema);
        requireOtaBucket(ctx, u.s3_bucket, 'file_info.s3_bucket');
        const problem = u.deploy_path ? deployPathProblem(u.deploy_path) : null;
        if (problem) throw new HttpError(400, `file_info.deploy_path: ${problem}`);
        holder.update = u;
      },
      async onFile(file, signal) {
        const u = holder.update;
        if (!u) throw new HttpError(400, 'file_info: must be sent before the "file" part');
        const row = await findFile(ctx, u.s3_bucket, u.s3_object_name);
        if (!row) throw new HttpError(400, 'The file does not exist.');
        // Overwrites the object in place (the reference's semantics: the key stays, deploy_from_s3 sends it again).
        // A failed or aborted upload leaves the previous content: a multipart upload only appears when completed.
        const ref = { bucket: u.s3_bucket, key: u.s3_object_name };
        const { sha256, size } = await streamToS3(ctx.s3, ref, file.stream, {
          partSizeBytes: ctx.options.partSizeBytes,
          queueSize: ctx.options.uploadQueueSize,
          signal,
        }).catch((e: unknown) => {
          throw signal.aborted ? e : s3HttpError(e, ref);
        });
        holder.content = { sha256, size, fileName: sanitizeFilename(file.filename) || row.file_name };
      },
    });
    const u = holder.update;
    if (!u) throw new HttpError(422, 'file_info: Field required');
    const set: Record<string, unknown> = { timestamp: new Date() };
    for (const k of ['robot_id', 'robot_type', 'robot_version', 'deploy_path', 'file_metadata'] as const) {
      if (u[k] !== undefined) set[k] = u[k];
    }
    const content = holder.content;
    if (content) Object.assign(set, { sha256: content.sha256, size: content.size, file_name: content.fileName });
    const row = await ctx.models.OtaFile.findOneAndUpdate(
      { s3_bucket: u.s3_bucket, s3_object_name: u.s3_object_name },
      { $set: set },
      { new: true },
    ).lean<OtaFile>();
    if (!row) {
      if (content) ctx.log.error({ bucket: u.s3_bucket, key: u.s3_object_name }, 'object overwritten but its row vanished meanwhile');
      throw new HttpError(400, 'The file does not exist.');
    }
    res.json(fileRow(row));
  });

  r.delete('/file/delete', async (req, res) => {
    const q = parseParams(objectQuerySchema, req.query);
    requireOtaBucket(ctx, q.s3_bucket);
    const file = await findFile(ctx, q.s3_bucket, q.s3_object_name);
    if (!file) throw new HttpError(404, FILE_NOT_FOUND);
    // Object first, row second: if S3 fails the row stays, so the file is still listed and can be deleted again
    // (the reference deleted the row first and left an orphan object behind on an S3 error).
    try {
      await ctx.s3.send(new DeleteObjectCommand({ Bucket: q.s3_bucket, Key: q.s3_object_name }));
    } catch (err) {
      ctx.log.error({ err, bucket: q.s3_bucket, key: q.s3_object_name }, 'S3 delete failed; row kept');
      throw new HttpError(502, 'Could not delete the object from storage; the file record is kept.');
    }
    await ctx.models.OtaFile.deleteOne({ s3_bucket: q.s3_bucket, s3_object_name: q.s3_object_name });
    await ctx.models.DeployTarget.deleteMany({ s3_bucket: q.s3_bucket, s3_object_name: q.s3_object_name });
    res.json(null);
  });

  for (const [path, valid] of [
    ['/file/validate', true],
    ['/file/invalidate', false],
  ] as const) {
    r.put(path, async (req, res) => {
      const q = parseParams(objectQuerySchema, req.query);
    requireOtaBucket(ctx, q.s3_bucket);
      const row = await ctx.models.OtaFile.findOneAndUpdate(
        { s3_bucket: q.s3_bucket, s3_object_name: q.s3_object_name },
        { $set: { valid } },
        { new: true },
      ).lean<OtaFile>();
      if (!row) throw new HttpError(404, FILE_NOT_FOUND);
      res.json(fileRow(row));
    });
  }

  return r;
}
