// The audit trail of the cloud API: one entry per authenticated mutating request (POST/PUT/PATCH/DELETE), written
// when the response has been sent (or the client went away), in the `audit_log` collection:
//   who  = the token's subject, id (jti) and role;   what = method, route pattern and key parameters;
//   when = the request's start;   where from = client address (req.ip);   outcome = HTTP status (499: client gone).
// Key parameters are an allow-list of query/path names (object, robot, path, job, token id) plus what the route
// itself notes with noteAudit (e.g. the object names an upload stored, the job ids a deploy created). Headers,
// bodies and upload contents never go in, so neither does any token or secret.
// Refused requests are audited too when the token was valid (403 and 4xx/5xx outcomes); 401 (no valid caller)
// and 429 (the rate limit, which must stay cheap) go to the request log only. A failed write is logged with the
// entry (the log is the fallback record); the API answers before the entry is stored.
import crypto from 'node:crypto';
import type { Request, RequestHandler, Response } from 'express';
import type { Model } from 'mongoose';
import type { Logger } from '../common/logger';
import type { AuditEntry } from '../common/models/security';
import { authContext } from './auth';

export type AuditValue = string | number | boolean | null | string[];

const MUTATING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
/** Query/path parameters worth recording; anything else a caller sends (free text, unknown names) is left out. */
const KEY_PARAMS = ['robot_id', 's3_bucket', 's3_object_name', 'deploy_path', 'job_id', 'timeout_s'] as const;
const MAX_VALUE = 300;
const MAX_LIST = 100;

const clip = (v: string): string => (v.length > MAX_VALUE ? `${v.slice(0, MAX_VALUE)}…` : v);

/** Adds route-specific facts (never secrets or contents) to this request's audit entry. */
export function noteAudit(res: Response, detail: Record<string, AuditValue>): void {
  const prev = (res.locals.audit ?? {}) as Record<string, AuditValue>;
  res.locals.audit = { ...prev, ...detail };
}

/** `<ISO time>-<random>`: unique, and sorting by it sorts by time. */
export const auditId = (at: Date): string => `${at.toISOString()}-${crypto.randomBytes(4).toString('hex')}`;

function keyParams(req: Request): Record<string, string> {
  const out: Record<string, string> = {};
  const sources: Array<Record<string, unknown>> = [req.query as Record<string, unknown>, req.params as Record<string, unknown>];
  for (const src of sources) {
    for (const k of KEY_PARAMS) {
      const v = src[k];
      if (typeof v === 'string' && v !== '') out[k] = clip(v);
    }
  }
  return out;
}

function routeDetail(res: Response): Record<string, AuditValue> {
  const raw = (res.locals.audit ?? {}) as Record<string, AuditValue>;
  const out: Record<string, AuditValue> = {};
  for (const [k, v] of Object.entries(raw)) {
    out[k] = Array.isArray(v) ? v.slice(0, MAX_LIST).map(clip) : typeof v === 'string' ? clip(v) : v;
  }
  return out;
}

/** Entries gathered before one insert: a burst of deploys cost one audit insert per request on FerretDB. */
const AUDIT_WINDOW_MS = 50;
const AUDIT_MAX_BATCH = 50;

/** The audit middleware, and what shutdown needs of it: the entries it still holds stored before the DB closes. */
export interface AuditTrail extends RequestHandler {
  /** Stores the entries gathered so far and resolves once every insert begun has settled (stored or logged). */
  flush(): Promise<void>;
}

export function auditTrail(model: Model<AuditEntry>, log: Logger): AuditTrail {
  // Measured on the 200-deploy burst: 203 single-entry inserts, a third of the API's database statements while it
  // accepted the burst. Entries finished within AUDIT_WINDOW_MS go out as one unordered insertMany (the API
  // answers before its entry is stored either way; an entry not stored is logged with the entry, as before).
  let pending: Array<AuditEntry & { _id: string }> = [];
  let timer: NodeJS.Timeout | null = null;
  // Inserts under way: a SIGTERM must not close the database under them (their entries would be lost unlogged).
  const inFlight = new Set<Promise<void>>();
  const flush = (): Promise<void> => {
    if (timer) clearTimeout(timer);
    timer = null;
    const batch = pending;
    pending = [];
    if (batch.length > 0) {
      const insert: Promise<void> = model.insertMany(batch, { ordered: false }).then(
        () => undefined,
        (err: unknown) => {
          const failed = new Set(
            ((err as { writeErrors?: Array<{ index?: number; err?: { index?: number } }> }).writeErrors ?? []).map((w) => w.index ?? w.err?.index),
          );
          for (const [i, entry] of batch.entries()) if (failed.size === 0 || failed.has(i)) log.error({ err, audit: entry }, 'audit entry not stored');
        },
      );
      inFlight.add(insert);
      void insert.finally(() => inFlight.delete(insert));
    }
    return Promise.all([...inFlight]).then(() => undefined);
  };
  const store = (entry: AuditEntry & { _id: string }) => {
    pending.push(entry);
    if (pending.length >= AUDIT_MAX_BATCH) void flush();
    else timer ??= setTimeout(() => void flush(), AUDIT_WINDOW_MS);
  };
  const handler: RequestHandler = (req, res, next) => {
    if (!MUTATING.has(req.method)) return next();
    const at = new Date();
    let done = false;
    const write = () => {
      if (done) return;
      done = true;
      const auth = authContext(res);
      // req.route is the matched route (its pattern, not the raw path); unmatched paths keep the raw path.
      const route: unknown = (req.route as { path?: unknown } | undefined)?.path;
      const entry: AuditEntry & { _id: string } = {
        _id: auditId(at),
        at,
        sub: auth?.subject ?? null,
        jti: auth?.tokenId ?? null,
        role: auth?.role ?? null,
        method: req.method,
        route: typeof route === 'string' ? `${req.baseUrl}${route}` : req.originalUrl.split('?')[0],
        params: { ...keyParams(req), ...routeDetail(res) },
        ip: req.ip ?? req.socket.remoteAddress ?? '',
        status: res.writableFinished ? res.statusCode : 499,
        ms: Date.now() - at.getTime(),
      };
      store(entry);
    };
    res.once('finish', write);
    res.once('close', write);
    next();
  };
  return Object.assign(handler, { flush });
}
