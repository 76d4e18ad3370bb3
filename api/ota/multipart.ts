// Streaming multipart/form-data reader (busboy). File parts are handed to a handler as streams while the
// request is still arriving, so an upload of any size flows to S3 with bounded memory. The JSON metadata field
// must precede the file parts (reference clients send it first): without it a file could not be named,
// checked or refused before its bytes are stored.
import busboy from 'busboy';
import type { Request } from 'express';
import type { Readable } from 'node:stream';
import { HttpError } from './errors';

export interface MultipartFile {
  /** The multipart filename as sent (busboy keeps only its last path segment); undefined when absent. */
  filename: string | undefined;
  mimeType: string;
  stream: Readable;
  /** 0-based position among the file parts of the file field. */
  index: number;
}

export interface MultipartSpec {
  metaField: string;
  fileField: string;
  /** Parses and checks the metadata field (throws HttpError); runs before any file part is handled. */
  onMeta(raw: string): void;
  /** Consumes one file part. Must stop and reject when `signal` aborts (another part or the request failed). */
  onFile(file: MultipartFile, signal: AbortSignal): Promise<void>;
  maxFiles: number;
  maxFieldBytes?: number;
  /** Largest file part, and largest request body (Content-Length, or bytes counted as they arrive): 413 beyond. */
  maxFileBytes?: number;
  maxRequestBytes?: number;
  /** How long to keep reading (and discarding) a failed request's body before answering anyway. */
  drainTimeoutMs?: number;
}

export interface MultipartResult {
  /** Other form fields, last value wins. */
  fields: Record<string, string>;
  fileCount: number;
  metaSeen: boolean;
}

/** The client disconnected mid-request; there is nobody to answer. */
export class ClientAbortedError extends Error {
  override name = 'ClientAbortedError';
  constructor() {
    super('client closed the connection before the request was complete');
  }
}

const tooManyFiles = (spec: MultipartSpec): HttpError =>
  new HttpError(413, `${spec.fileField}: at most ${spec.maxFiles} file${spec.maxFiles === 1 ? '' : 's'} per request`);

export const isMultipart = (req: Request): boolean => /^multipart\/form-data\b/i.test(req.headers['content-type'] ?? '');

/**
 * Reads the rest of a request we are no longer interested in, so the client finishes sending and then reads our
 * answer (closing early makes many clients report a connection reset instead of the error). Bounded in time.
 */
function drain(req: Request, timeoutMs: number): Promise<void> {
  if (req.readableEnded || req.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(done, timeoutMs);
    req.once('end', done);
    req.once('close', done);
    req.resume();
  });
}

export function readMultipart(req: Request, spec: MultipartSpec): Promise<MultipartResult> {
  if (!isMultipart(req)) {
    return Promise.reject(new HttpError(415, `expected multipart/form-data with a "${spec.metaField}" field`));
  }
  const maxFieldBytes = spec.maxFieldBytes ?? 1024 * 1024;
  const maxRequestBytes = spec.maxRequestBytes ?? Infinity;
  const tooLarge = () => new HttpError(413, `request body: larger than the limit of ${maxRequestBytes} bytes`);
  const declared = Number(req.headers['content-length'] ?? NaN);
  if (declared > maxRequestBytes) {
    // Refused before a byte is stored; the body is read and discarded (bounded) so the client sees the answer.
    return drain(req, spec.drainTimeoutMs ?? 30000).then(() => Promise.reject(tooLarge()));
  }
  return new Promise<MultipartResult>((resolve, reject) => {
    let bb: busboy.Busboy;
    try {
      bb = busboy({
        headers: req.headers,
        limits: { fieldSize: maxFieldBytes, fields: 100, files: spec.maxFiles + 10, ...(spec.maxFileBytes === undefined ? {} : { fileSize: spec.maxFileBytes }) },
      });
    } catch (e) {
      reject(new HttpError(400, `malformed multipart request: ${e instanceof Error ? e.message : String(e)}`));
      return;
    }
    const controller = new AbortController();
    const pending: Promise<void>[] = [];
    const activeStreams = new Set<Readable>();
    const fields: Record<string, string> = {};
    let fileCount = 0;
    let metaSeen = false;
    let failure: unknown = null;
    let settling = false;

    // Resolves or rejects once: after the body is read (or abandoned) and every file handler has finished.
    const settle = async () => {
      if (settling) return;
      settling = true;
      await drain(req, spec.drainTimeoutMs ?? 30000);
      await Promise.allSettled(pending);
      if (failure) reject(failure);
      else resolve({ fields, fileCount, metaSeen });
    };

    const fail = (err: unknown) => {
      if (failure) return;
      failure = err;
      controller.abort(err);
      req.unpipe(bb);
      // Without an error: the handler sees a premature close and stops; the reason is `failure`.
      for (const s of activeStreams) s.destroy();
      void settle();
    };

    bb.on('field', (name, value, info) => {
      if (failure) return;
      if (info.valueTruncated) return fail(new HttpError(413, `${name}: larger than ${maxFieldBytes} bytes`));
      if (name !== spec.metaField) {
        fields[name] = value;
        return;
      }
      if (metaSeen) return fail(new HttpError(400, `${name}: sent more than once`));
      metaSeen = true;
      try {
        spec.onMeta(value);
      } catch (e) {
        fail(e);
      }
    });

    bb.on('file', (name, stream, info) => {
      if (failure) {
        stream.resume();
        return;
      }
      if (name === spec.metaField) {
        stream.resume();
        return fail(new HttpError(422, `${name}: must be a form field holding JSON, not a file`));
      }
      if (name !== spec.fileField) {
        stream.resume(); // unknown file fields are ignored, as the reference does
        return;
      }
      if (!metaSeen) {
        stream.resume();
        return fail(new HttpError(400, `${spec.metaField}: must be sent before the "${spec.fileField}" file parts`));
      }
      if (fileCount >= spec.maxFiles) {
        stream.resume();
        return fail(tooManyFiles(spec));
      }
      // Busboy emits errors on the part stream (truncated body, client gone); the request-level handlers report
      // them, so a handler that has not attached its own listener yet must not crash the process.
      stream.on('error', () => undefined);
      const index = fileCount;
      // Busboy cuts the part at maxFileBytes and would end it normally: fail first, so the truncated upload aborts.
      stream.once('limit', () => fail(new HttpError(413, `${spec.fileField}.${index}: larger than the limit of ${spec.maxFileBytes} bytes per file`)));
      const file: MultipartFile = { filename: info.filename, mimeType: info.mimeType, stream, index: fileCount++ };
      activeStreams.add(stream);
      pending.push(
        spec
          .onFile(file, controller.signal)
          .catch(fail)
          .finally(() => activeStreams.delete(stream)),
      );
    });

    bb.on('error', (e: unknown) => fail(new HttpError(400, `malformed multipart body: ${e instanceof Error ? e.message : String(e)}`)));
    bb.on('partsLimit', () => fail(new HttpError(413, 'too many parts')));
    bb.on('fieldsLimit', () => fail(new HttpError(413, 'too many form fields')));
    bb.on('filesLimit', () => fail(tooManyFiles(spec)));
    bb.on('close', () => void settle());
    req.on('close', () => {
      if (!req.complete) fail(new ClientAbortedError());
    });
    if (maxRequestBytes !== Infinity) {
      let received = 0;
      req.on('data', (chunk: Buffer) => {
        received += chunk.length;
        if (received > maxRequestBytes) fail(tooLarge());
      });
    }
    req.pipe(bb);
  });
}
