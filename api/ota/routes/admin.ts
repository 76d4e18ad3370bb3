// Admin endpoints (ours): revoke a token by its id, and read the audit trail (newest first, keyset-paginated).
import express, { Router } from 'express';
import type { FilterQuery } from 'mongoose';
import type { AuditEntry } from '../../../common/models/security';
import { noteAudit } from '../../audit';
import { authContext, requireRole } from '../../auth';
import type { RevocationList } from '../../revocations';
import { HttpError } from '../errors';
import { parseParams } from '../http';
import { auditQuerySchema, revokeBodySchema, type AuditEntryView } from '../schemas';
import type { OtaContext } from '../types';

type StoredEntry = AuditEntry & { _id: string };

const view = (e: StoredEntry): AuditEntryView => ({
  id: e._id,
  at: new Date(e.at).toISOString(),
  sub: e.sub ?? null,
  jti: e.jti ?? null,
  role: e.role ?? null,
  method: e.method,
  route: e.route,
  params: (e.params ?? {}) as Record<string, unknown>,
  ip: e.ip ?? '',
  status: e.status,
  ms: e.ms,
});

/** The cursor is the id of the last entry of a page; ids look like `<ISO time>-<hex>`. */
const CURSOR = /^\d{4}-\d\d-\d\dT[\d:.]+Z-[0-9a-f]+$/;
const decodeCursor = (raw: string): string => {
  const id = Buffer.from(raw, 'base64url').toString('utf8');
  if (!CURSOR.test(id)) throw new HttpError(400, 'cursor: invalid (use next_cursor from the previous page)');
  return id;
};

export function adminRouter(ctx: OtaContext, revocations: RevocationList): Router {
  const r = Router();

  r.post('/tokens/revoke', requireRole('admin'), express.json({ limit: '16kb' }), async (req, res) => {
    const { jti, reason } = parseParams(revokeBodySchema, req.body ?? {});
    noteAudit(res, { revoked_jti: jti });
    const rev = await revocations.revoke(jti, authContext(res)?.subject ?? null, reason ?? null);
    res.json({ jti: rev.jti, revoked_at: rev.revoked_at.toISOString(), expires_at: rev.expires_at.toISOString() });
  });

  r.get('/audit', requireRole('admin'), async (req, res) => {
    const q = parseParams(auditQuerySchema, req.query);
    const filter: FilterQuery<StoredEntry> = {};
    if (q.sub !== undefined) filter.sub = q.sub;
    if (q.jti !== undefined) filter.jti = q.jti;
    if (q.cursor !== undefined) filter._id = { $lt: decodeCursor(q.cursor) };
    // One extra row tells whether another page exists without a count query.
    const rows = await ctx.models.AuditEntry.find(filter).sort({ _id: -1 }).limit(q.limit + 1).lean<StoredEntry[]>();
    const page = rows.slice(0, q.limit);
    const last = page[page.length - 1];
    const next_cursor = rows.length > q.limit && last ? Buffer.from(last._id).toString('base64url') : null;
    res.json({ entries: page.map(view), next_cursor });
  });

  return r;
}
