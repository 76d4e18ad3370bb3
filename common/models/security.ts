// Operator security records of the cloud API: the audit trail of mutating requests and the revoked token ids.
// Both are keyed by natural string ids and read with keyset pagination or small scans (no TTL index: FerretDB has
// none, so expired revocations are deleted by the API when it revokes).
import { Schema, type Connection, type InferSchemaType, type Model } from 'mongoose';
import { withQueryTimeout } from './query-timeout';

const auditEntrySchema = new Schema(
  {
    // `<ISO time>-<random>`: sorts by time, so the newest-first listing pages on _id alone.
    _id: { type: String, required: true },
    at: { type: Date, required: true },
    /** Who: the token's subject, id (jti) and role. */
    sub: { type: String, default: null },
    jti: { type: String, default: null },
    role: { type: String, default: null },
    /** What: method, the route's pattern (e.g. /api/v1/job/:job_id/cancel) and its key parameters. */
    method: { type: String, required: true },
    route: { type: String, required: true },
    params: { type: Schema.Types.Mixed, default: {} },
    /** Client address (req.ip; behind a proxy set API_TRUST_PROXY). */
    ip: { type: String, default: '' },
    /** Outcome: the HTTP status answered, or 499 when the client went away first. */
    status: { type: Number, required: true },
    ms: { type: Number, required: true },
  },
  { collection: 'audit_log', versionKey: false, minimize: false },
);

const revokedTokenSchema = new Schema(
  {
    _id: { type: String, required: true }, // the token's jti
    revoked_at: { type: Date, required: true },
    /** After this, no token with this id can still be valid (revoked_at + the maximum token lifetime). */
    expires_at: { type: Date, required: true },
    revoked_by: { type: String, default: null },
    reason: { type: String, default: null },
  },
  { collection: 'revoked_tokens', versionKey: false },
);

export type AuditEntry = InferSchemaType<typeof auditEntrySchema>;
export type RevokedToken = InferSchemaType<typeof revokedTokenSchema>;

export interface SecurityModels {
  AuditEntry: Model<AuditEntry>;
  RevokedToken: Model<RevokedToken>;
}

export function registerSecurityModels(conn: Connection, timeoutMs: number): SecurityModels {
  withQueryTimeout([auditEntrySchema, revokedTokenSchema], timeoutMs);
  return {
    AuditEntry: conn.model<AuditEntry>('AuditEntry', auditEntrySchema),
    RevokedToken: conn.model<RevokedToken>('RevokedToken', revokedTokenSchema),
  };
}
