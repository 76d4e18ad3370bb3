// GET /health without authentication (load balancers, the reference daemon's wait-for-cloud loop). It checks
// the three dependencies a request needs and answers 503 when one is down, where the reference always said 200.
// Anonymous callers must not be able to turn it into load on the database, S3 and Temporal: one check runs at a
// time and its answer is reused for healthCacheMs (default 2 s), whatever the request rate.
import { HeadBucketCommand } from '@aws-sdk/client-s3';
import { Router } from 'express';
import type { Health } from '../schemas';
import { DEFAULT_BUCKET, type OtaContext } from '../types';

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error('timeout')), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** "ok" or a short reason; no addresses or messages that would describe the internals to anonymous callers. */
async function probe(fn: () => Promise<unknown>, ms: number): Promise<string> {
  try {
    await withTimeout(fn(), ms);
    return 'ok';
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    const name = e instanceof Error ? (e.message === 'timeout' ? 'timeout' : e.name) : 'error';
    return `error: ${typeof code === 'string' ? code : name}`;
  }
}

export async function checkHealth(ctx: OtaContext): Promise<Health> {
  const ms = ctx.options.healthTimeoutMs;
  const [mongo, s3, temporal] = await Promise.all([
    probe(async () => {
      const db = ctx.models.OtaFile.db.db;
      if (!db) throw new Error('not connected');
      await db.command({ ping: 1 });
    }, ms),
    probe(() => ctx.s3.send(new HeadBucketCommand({ Bucket: DEFAULT_BUCKET })), ms),
    probe(
      () =>
        ctx.temporal.withDeadline(Date.now() + ms, () =>
          ctx.temporal.workflowService.describeNamespace({ namespace: ctx.temporal.options.namespace }),
        ),
      ms + 100,
    ),
  ]);
  return { status: 'OTA File Service: Running', dependencies: { mongo, s3, temporal } };
}

/** checkHealth shared by concurrent callers and reused for `ttlMs` after it completes. */
export function cachedHealth(ctx: OtaContext, ttlMs: number): () => Promise<Health> {
  let last: { at: number; health: Health } | null = null;
  let running: Promise<Health> | null = null;
  return () => {
    if (last && Date.now() - last.at < ttlMs) return Promise.resolve(last.health);
    running ??= checkHealth(ctx)
      .then((health) => {
        last = { at: Date.now(), health };
        return health;
      })
      .finally(() => {
        running = null;
      });
    return running;
  };
}

export function healthRouter(ctx: OtaContext): Router {
  const r = Router();
  const current = cachedHealth(ctx, ctx.options.healthCacheMs);
  r.get('/health', async (_req, res) => {
    const health = await current();
    const ok = Object.values(health.dependencies).every((v) => v === 'ok');
    res.status(ok ? 200 : 503).json(health);
  });
  return r;
}
