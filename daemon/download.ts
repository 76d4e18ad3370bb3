// Resumable, memory-bounded HTTP download into `<target>.part`, with a sidecar that remembers which object
// and which version (strong ETag) the partial bytes belong to, so a restarted daemon continues where it
// stopped instead of starting over (the reference daemon always restarted from zero).
//
// Protocol (notes/STACK.md "Resumable HTTP download"): `Range: bytes=<n>-` + `If-Range: <strong ETag>`;
// 206 → check Content-Range start/total and append; 200 → the object changed or the server ignores ranges:
// truncate and take the full body; 416 with total == n → already complete.
import { createHash, type Hash } from 'node:crypto';
import fsp from 'node:fs/promises';
import { errnoCode, removeQuietly, sleep, writeFileAtomic } from './fs-util';
import { httpGet, type HttpGetError, type HttpResponse } from '../common/http-get';

export class DownloadError extends Error {
  override name = 'DownloadError';
  constructor(
    message: string,
    /** False when trying again cannot help (e.g. 404): the job fails at once. */
    readonly retryable: boolean,
  ) {
    super(message);
  }
}

/** What the partial bytes are: a `.part` is only continued for the same object, content and version. */
export interface PartIdentity {
  bucket: string;
  object: string;
  sha256: string | null;
}

interface Sidecar {
  v: 1;
  bucket: string;
  object: string;
  sha256: string | null;
  etag: string | null;
  total: number | null;
}

function isSidecar(v: unknown): v is Sidecar {
  const s = v as Record<string, unknown>;
  const nullableString = (x: unknown) => x === null || typeof x === 'string';
  return (
    typeof s === 'object' && s !== null && s.v === 1 && typeof s.bucket === 'string' && typeof s.object === 'string' &&
    nullableString(s.sha256) && nullableString(s.etag) &&
    (s.total === null || (typeof s.total === 'number' && Number.isInteger(s.total) && s.total >= 0))
  );
}

export const partPaths = (target: string) => ({ part: `${target}.part`, sidecar: `${target}.part.json` });

export interface DownloadRequest {
  url: string;
  target: string;
  identity: PartIdentity;
  signal: AbortSignal;
  /** Bandwidth cap (robots often share a thin uplink); unlimited when absent. */
  maxBytesPerSecond?: number;
  /** Called after every write batch; the caller throttles what it reports. */
  onProgress?: (received: number, total: number | null) => void;
}

export interface DownloadResult {
  /** Size of the complete `.part` file. */
  bytes: number;
  sha256: string;
  /** Bytes already on disk when this attempt started (0 = fresh download). */
  resumedFrom: number;
  /** Bytes received over the network by this attempt. */
  fetched: number;
}

/** Weak validators (`W/"…"`) must never be used with If-Range (RFC 9110 §13.1.5). */
const strongEtag = (etag: string | null): string | null => (etag && !etag.startsWith('W/') ? etag : null);

const WRITE_BATCH_BYTES = 1 << 20;

async function readSidecar(file: string): Promise<Sidecar | null> {
  try {
    const parsed: unknown = JSON.parse(await fsp.readFile(file, 'utf8'));
    return isSidecar(parsed) ? parsed : null;
  } catch {
    return null;
  }
}

async function fileSize(file: string): Promise<number | null> {
  try {
    return (await fsp.stat(file)).size;
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return null;
    throw e;
  }
}

/** Hashes the bytes already on disk so the final digest covers the whole file without a second full pass. */
async function hashPrefix(file: string, length: number, signal: AbortSignal): Promise<Hash> {
  const hash = createHash('sha256');
  if (length === 0) return hash;
  // One reused buffer and positional reads: no stream allocating a new buffer per read.
  const buf = Buffer.allocUnsafe(WRITE_BATCH_BYTES);
  const fh = await fsp.open(file, 'r');
  try {
    for (let at = 0; at < length; ) {
      signal.throwIfAborted();
      const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, length - at), at);
      if (bytesRead === 0) throw new DownloadError(`${file} is shorter than ${length} bytes`, true);
      hash.update(buf.subarray(0, bytesRead));
      at += bytesRead;
    }
  } finally {
    await fh.close();
  }
  return hash;
}

// Content-Range: "bytes <start>-<end>/<total>", or "bytes */<total>" on a 416; the total may be "*" (unknown).
export function parseContentRange(header: string | null): { start: number | null; total: number | null } | null {
  if (!header) return null;
  const m = /^bytes\s+(?:(\d+)-(\d+)|\*)\/(\d+|\*)$/i.exec(header.trim());
  if (!m) return null;
  return { start: m[1] !== undefined ? Number(m[1]) : null, total: m[3] === '*' ? null : Number(m[3]) };
}

async function resumableOffset(part: string, sidecar: Sidecar | null, identity: PartIdentity): Promise<number> {
  if (!sidecar || !strongEtag(sidecar.etag)) return 0;
  if (sidecar.bucket !== identity.bucket || sidecar.object !== identity.object || sidecar.sha256 !== identity.sha256) return 0;
  const size = await fileSize(part);
  if (size === null) return 0;
  if (sidecar.total !== null && size > sidecar.total) return 0;
  return size;
}

async function openResponse(url: string, offset: number, etag: string | null, signal: AbortSignal): Promise<HttpResponse> {
  const headers: Record<string, string> = { 'accept-encoding': 'identity' };
  if (offset > 0 && etag) {
    headers.range = `bytes=${offset}-`;
    headers['if-range'] = etag;
  }
  try {
    return await httpGet(url, headers, signal);
  } catch (e) {
    if (signal.aborted) throw signal.reason;
    throw new DownloadError(`download failed: ${(e as HttpGetError).code ?? (e as Error).message}`, true);
  }
}

function statusError(res: HttpResponse): DownloadError {
  // 403 stays retryable: a presigned URL that expired while the robot was offline is replaced by the cloud's
  // next dispatch of the same job. 404/400/410 will not change by waiting.
  const permanent = [400, 404, 405, 410, 501].includes(res.status);
  return new DownloadError(`download failed: HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ''}`, !permanent);
}

/**
 * One download attempt. Leaves the `.part` and its sidecar in place on failure, so the next attempt (or the
 * next daemon run) resumes; the caller removes them when the job is abandoned.
 */
export async function downloadToPart(req: DownloadRequest): Promise<DownloadResult> {
  const { part, sidecar: sidecarFile } = partPaths(req.target);
  const sidecar = await readSidecar(sidecarFile);
  let offset = await resumableOffset(part, sidecar, req.identity);
  const etag = offset > 0 ? strongEtag(sidecar?.etag ?? null) : null;

  let res = await openResponse(req.url, offset, etag, req.signal);
  let total: number | null = null;
  let fresh = true;

  if (res.status === 206 && offset > 0) {
    const range = parseContentRange(res.headers.get('content-range'));
    // Some S3-compatible servers ignore If-Range; the 206's own ETag is checked too, so a changed object is
    // never spliced onto old bytes.
    const sameVersion = (res.headers.get('etag') ?? etag) === etag;
    if (range && sameVersion && range.start === offset && (sidecar?.total == null || range.total === sidecar.total)) {
      total = range.total;
      fresh = false;
    } else {
      // The server answered a different range than asked: do not guess, start over with a plain GET.
      res.cancel();
      offset = 0;
      res = await openResponse(req.url, 0, null, req.signal);
    }
  } else if (res.status === 416 && offset > 0) {
    const range = parseContentRange(res.headers.get('content-range'));
    res.cancel();
    if (range?.total != null && range.total === offset && range.total === sidecar?.total) {
      const hash = await hashPrefix(part, offset, req.signal);
      req.onProgress?.(offset, offset);
      return { bytes: offset, sha256: hash.digest('hex'), resumedFrom: offset, fetched: 0 };
    }
    offset = 0;
    res = await openResponse(req.url, 0, null, req.signal);
  }

  if (fresh) {
    if (res.status !== 200) {
      res.cancel();
      throw statusError(res);
    }
    offset = 0;
    const length = res.headers.get('content-length');
    total = length !== null && /^\d+$/.test(length) ? Number(length) : null;
    // The sidecar is written before the first byte: whatever reaches the `.part` is attributable.
    await removeQuietly(part);
    const meta: Sidecar = { v: 1, ...req.identity, etag: res.headers.get('etag'), total };
    await writeFileAtomic(sidecarFile, JSON.stringify(meta));
  }

  const resumedFrom = offset;
  const hash = fresh ? createHash('sha256') : await hashPrefix(part, offset, req.signal);
  const fh = await fsp.open(part, fresh ? 'w' : 'r+', 0o600);
  let position = offset;
  try {
    if (!fresh) await fh.truncate(offset);
    req.onProgress?.(position, total);
    // Bytes are hashed as they arrive and copied into one of two fixed batch buffers; a full batch is written at
    // its position while the other fills, so the network and the disk overlap. Memory is these two buffers and
    // the socket's read buffer, whatever the size of the file: when both batches are busy the socket is paused
    // (back-pressure) instead of memory growing.
    const batches = [Buffer.allocUnsafe(WRITE_BATCH_BYTES), Buffer.allocUnsafe(WRITE_BATCH_BYTES)];
    let current = 0; // index of the batch being filled
    let filled = 0;
    let queued = offset; // file position of the batch being filled
    let writing: Promise<void> | null = null;
    const flush = async (): Promise<void> => {
      if (writing) await writing; // the other batch is free again
      if (filled === 0) return;
      const buf = batches[current];
      const len = filled;
      const at = queued;
      current ^= 1;
      filled = 0;
      queued += len;
      const w = (async () => {
        let written = 0;
        while (written < len) written += (await fh.write(buf, written, len - written, at + written)).bytesWritten;
        position = at + len;
        req.onProgress?.(position, total);
      })();
      w.catch(() => undefined); // observed by the next flush or the final drain; never an unhandled rejection meanwhile
      writing = w;
    };
    const drain = async () => {
      const w = writing;
      writing = null;
      if (w) await w;
    };
    const started = Date.now();
    let received = 0;
    /** Copies into the batches; when one fills, waits for the flush (the chunk stays valid: the socket is paused). */
    const copyIn = (rest: Buffer): Promise<void> | undefined => {
      let at = 0;
      while (at < rest.length) {
        const n = rest.copy(batches[current], filled, at);
        filled += n;
        at += n;
        if (filled === WRITE_BATCH_BYTES) {
          const more = rest.subarray(at);
          return flush().then(() => copyIn(more));
        }
      }
      return undefined;
    };
    const take = (chunk: Buffer): Promise<void> | undefined => {
      hash.update(chunk);
      received += chunk.length;
      const copying = copyIn(chunk);
      const ahead = req.maxBytesPerSecond ? (received / req.maxBytesPerSecond) * 1000 - (Date.now() - started) : 0;
      if (ahead > 20) return copying ? copying.then(() => sleep(ahead, req.signal)) : sleep(ahead, req.signal);
      return copying;
    };
    try {
      await res.pipe(take);
      await flush();
      await drain();
    } catch (e) {
      if (req.signal.aborted) {
        await drain().catch(() => undefined);
        throw req.signal.reason;
      }
      const code = errnoCode(e);
      await drain().catch(() => undefined);
      if (code === 'ENOSPC' || code === 'EDQUOT') throw new DownloadError(`cannot write ${part}: no space left on device`, false);
      // Keep what arrived, for the next attempt.
      await flush().catch(() => undefined);
      await drain().catch(() => undefined);
      throw new DownloadError(`download interrupted after ${position} bytes: ${(e as Error).message}`, true);
    }
    // No fsync here: the installer fsyncs the file once, after setting its mode, right before the rename.
  } finally {
    await fh.close();
  }
  if (total !== null && position !== total) {
    throw new DownloadError(`download incomplete: got ${position} of ${total} bytes`, true);
  }
  return { bytes: position, sha256: hash.digest('hex'), resumedFrom, fetched: position - resumedFrom };
}

export async function removePart(target: string): Promise<void> {
  const { part, sidecar } = partPaths(target);
  await removeQuietly(part, sidecar);
}
