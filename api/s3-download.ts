// Streams an S3 object to an HTTP response with Range support and S3's strong ETag: the OTA file download and
// cloud sync's RF and static-image downloads share it. If-Range is honoured (a resumed download of an object
// that changed since gets the whole new object with 200, never a splice of two versions).
import { GetObjectCommand, S3ServiceException, type GetObjectCommandOutput, type S3Client } from '@aws-sdk/client-s3';
import type { Request, Response } from 'express';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Logger } from '../common/logger';
import { HttpError } from './ota/errors';
import { isS3NotFound, s3HttpError } from './ota/s3';

export interface DownloadableObject {
  bucket: string;
  key: string;
  size: number;
  fileName: string;
}

async function getObject(s3: S3Client, obj: DownloadableObject, range: string | undefined, ifMatch: string | undefined): Promise<GetObjectCommandOutput | 'changed'> {
  try {
    return await s3.send(new GetObjectCommand({ Bucket: obj.bucket, Key: obj.key, Range: range, IfMatch: ifMatch }));
  } catch (e) {
    if (isS3NotFound(e)) throw new HttpError(404, 'File not found in storage');
    if (e instanceof S3ServiceException && (e.name === 'InvalidRange' || e.$metadata.httpStatusCode === 416)) {
      throw new HttpError(416, 'Requested range not satisfiable', { 'Content-Range': `bytes */${obj.size}` });
    }
    if (e instanceof S3ServiceException && e.$metadata.httpStatusCode === 412) return 'changed';
    throw s3HttpError(e, { bucket: obj.bucket, key: obj.key });
  }
}

export async function streamS3Object(s3: S3Client, log: Logger, obj: DownloadableObject, req: Pick<Request, 'headers'>, res: Response): Promise<void> {
  const range = req.headers.range;
  const h = req.headers['if-range'];
  const ifRange = typeof h === 'string' ? h : undefined;
  // If-Range with a weak or date validator never matches a strong comparison: send the whole object.
  const usableIfRange = range && ifRange && /^"/.test(ifRange) ? ifRange : undefined;
  let got = await getObject(s3, obj, range && (!ifRange || usableIfRange) ? range : undefined, usableIfRange);
  if (got === 'changed') got = await getObject(s3, obj, undefined, undefined);
  if (got === 'changed') throw new HttpError(503, 'File changed during the request: retry');
  const out = got;
  // Streamed straight through: no temp file on the server.
  res.status(out.ContentRange ? 206 : 200);
  res.attachment(obj.fileName);
  res.setHeader('Content-Type', 'application/octet-stream');
  res.setHeader('Accept-Ranges', 'bytes');
  if (out.ContentLength !== undefined) res.setHeader('Content-Length', String(out.ContentLength));
  if (out.ContentRange) res.setHeader('Content-Range', out.ContentRange);
  if (out.ETag) res.setHeader('ETag', out.ETag);
  if (out.LastModified) res.setHeader('Last-Modified', out.LastModified.toUTCString());
  const body = out.Body as Readable | undefined;
  if (!body) {
    res.end();
    return;
  }
  try {
    await pipeline(body, res);
  } catch (err) {
    // Usually the client went away mid-download; the S3 stream is destroyed by pipeline either way.
    log.debug({ err, key: obj.key }, 'download stream ended early');
  }
}
