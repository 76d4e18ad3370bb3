// One error type for everything a route wants to answer with a status, and the handler that turns errors into
// the reference's JSON shape (`{"detail": ...}`). Unknown errors become a bare 500: the stack goes to the log,
// never to the client.
import type { ErrorRequestHandler, RequestHandler } from 'express';
import type { ZodError } from 'zod';
import type { Logger } from '../../common/logger';

/** A per-item entry of a 4xx/5xx detail list, shaped like the reference's failed upload/deploy items. */
export type ItemDetail = Record<string, string | number | null | undefined>;

export type Detail = string | ItemDetail[];

export class HttpError extends Error {
  override name = 'HttpError';
  constructor(
    readonly status: number,
    readonly detail: Detail,
    readonly headers: Record<string, string> = {},
  ) {
    super(typeof detail === 'string' ? detail : `HTTP ${status}`);
  }
}

/** "a.b.0.c: message; x: message" — every issue names the field it is about. */
export function zodDetail(err: ZodError, prefix = ''): string {
  return err.issues
    .map((i) => {
      const field = [prefix, ...i.path.map(String)].filter((p) => p !== '').join('.');
      return field ? `${field}: ${i.message}` : i.message;
    })
    .join('; ');
}

/** Framework-level validation (missing/mistyped parameter, malformed JSON form field): 422 like the reference. */
export const unprocessable = (err: ZodError, prefix = ''): HttpError => new HttpError(422, zodDetail(err, prefix));

export const notFoundHandler: RequestHandler = (_req, res) => {
  res.status(404).json({ detail: 'Not Found' });
};

interface BodyParserError {
  type: string;
  status: number;
}
const isBodyParserError = (e: unknown): e is BodyParserError =>
  typeof e === 'object' && e !== null && typeof (e as BodyParserError).type === 'string' && typeof (e as BodyParserError).status === 'number';

export function errorHandler(log: Logger): ErrorRequestHandler {
  return (err: unknown, req, res, _next) => {
    let status = 500;
    let detail: Detail = 'Internal Server Error';
    let headers: Record<string, string> = {};
    if (err instanceof HttpError) {
      ({ status, detail, headers } = err);
      if (status >= 500) log.error({ err, method: req.method, path: req.path }, 'request failed');
    } else if (isBodyParserError(err) && err.status >= 400 && err.status < 500) {
      status = err.status;
      detail = err.type === 'entity.parse.failed' ? 'body: invalid JSON' : `body: ${err.type}`;
    } else {
      log.error({ err, method: req.method, path: req.path }, 'unhandled error');
    }
    // The client went away (aborted upload) or a stream already started: nothing sensible can be sent.
    if (res.headersSent || req.socket.destroyed) {
      res.destroy();
      return;
    }
    res.status(status).set(headers).json({ detail });
  };
}
