// Revoked token ids (jti), stored in the cloud database (`revoked_tokens`) and checked against an in-process copy,
// so a request costs no database query. The copy is reloaded when it is older than API_REVOCATION_REFRESH (default
// 5 s) by the first request that needs it (one load at a time; requests wait for it), so:
// - on the API process that revoked a token, the revocation holds at once (it is added to the copy directly);
// - on every other API process, within API_REVOCATION_REFRESH;
// - when the database cannot be read, authenticated requests get 503 rather than a possibly revoked token passing.
// An entry is only needed until every token that could carry the id has expired: revoked_at + the maximum token
// lifetime (a token with an iat in the future is refused). Expired entries are deleted when a token is revoked.
import type { Model } from 'mongoose';
import type { RevokedToken } from '../common/models/security';

export interface Revocation {
  jti: string;
  revoked_at: Date;
  expires_at: Date;
}

export class RevocationList {
  private loaded = new Set<string>();
  /** Revoked by this process: kept beside the loaded copy, so a load that raced the revocation cannot drop it. */
  private local = new Map<string, number>();
  private loadedAt = -Infinity;
  private loading: Promise<void> | null = null;

  constructor(
    private readonly model: Model<RevokedToken>,
    private readonly o: { refreshMs: number; maxTokenTtlMs: number },
  ) {}

  async isRevoked(jti: string): Promise<boolean> {
    if (this.local.has(jti)) return true;
    if (Date.now() - this.loadedAt >= this.o.refreshMs) await this.reload();
    return this.loaded.has(jti);
  }

  private reload(): Promise<void> {
    this.loading ??= (async () => {
      const started = Date.now();
      try {
        const rows = await this.model.find({ expires_at: { $gt: new Date(started) } }, { _id: 1 }).lean<Array<{ _id: string }>>();
        this.loaded = new Set(rows.map((r) => r._id));
        this.loadedAt = started;
        for (const [jti, expires] of this.local) if (expires <= started) this.local.delete(jti);
      } finally {
        this.loading = null;
      }
    })();
    return this.loading;
  }

  /** Stores the revocation (idempotent: revoking twice keeps the first time) and applies it here at once. */
  async revoke(jti: string, by: string | null, reason: string | null): Promise<Revocation> {
    const now = new Date();
    const expires = new Date(now.getTime() + this.o.maxTokenTtlMs);
    // Housekeeping instead of a TTL index (FerretDB has none): the list stays as small as the revocations in force,
    // and an expired entry of this id is not mistaken for a current one below.
    await this.model.deleteMany({ expires_at: { $lte: now } }).catch(() => undefined);
    const row = await this.model
      .findOneAndUpdate(
        { _id: jti },
        { $setOnInsert: { _id: jti, revoked_at: now, expires_at: expires, revoked_by: by, reason } },
        { upsert: true, new: true },
      )
      .lean<RevokedToken & { _id: string }>();
    this.local.set(jti, (row?.expires_at ?? expires).getTime());
    return { jti, revoked_at: row?.revoked_at ?? now, expires_at: row?.expires_at ?? expires };
  }
}
