// What the OTA app is built from. Everything is passed in, so tests run the same app against the real servers
// with their own database name, task queue and timeouts.
import type { S3Client } from '@aws-sdk/client-s3';
import type { WorkflowClient } from '@temporalio/client';
import type { Config } from '../../common/config';
import type { Logger } from '../../common/logger';
import type { CloudModels } from '../../common/db';

export interface OtaAppOptions {
  /** Upper bound for the live-progress query of a running job (GET /job_state); the DB answer is sent without it. */
  queryTimeoutMs: number;
  /** Upper bound for starting or signalling a workflow. */
  temporalTimeoutMs: number;
  /** Per dependency in GET /health. */
  healthTimeoutMs: number;
  /** GET /health reuses its last answer this long (it is unauthenticated: bounded load on the dependencies). */
  healthCacheMs: number;
  /** Multipart part size for uploads to S3 (memory per upload is about partSize x uploadQueueSize). */
  partSizeBytes: number;
  uploadQueueSize: number;
  /** Most file parts one upload/deploy request may carry. */
  maxFilesPerRequest: number;
  /** Job reconciler (reconciler.ts): time between passes; the first pass runs at start. */
  reconcileIntervalMs: number;
  /** A PENDING job younger than this is left to the request that created it (which starts its workflow). */
  reconcileGraceMs: number;
  /** Most jobs one pass looks at (read in chunks of 50); the next pass continues after the last one. */
  reconcileMaxJobsPerPass: number;
  /** A caller-chosen object name is held for an upload this long, renewed while the upload runs. */
  uploadLockTtlMs: number;
  /** Job archiver (archiver.ts, run by the reconciler): time between passes (0: no archiving). */
  archiveIntervalMs: number;
  /** A job terminal for this long moves to the archive (rollout jobs: once their rollout is finished that long). */
  archiveAfterMs: number;
  /** Most jobs one archive pass moves (in chunks of 50); the next pass takes the rest. */
  archiveMaxJobsPerPass: number;
  /**
   * Group commit of single deploys without a timeout (deploy-batcher.ts): stored with one insert per batch and
   * driven by one batch workflow. false: one otaDeployment workflow per job. Default: OTA_DEPLOY_BATCH.
   */
  deployBatching: boolean;
  /** A batch waits at most this long for more deploys after its first (OTA_DEPLOY_BATCH_WINDOW). */
  deployBatchWindowMs: number;
  /** A batch goes out at once with this many jobs (at most 50: one insert; OTA_DEPLOY_BATCH_MAX_JOBS). */
  deployBatchMaxJobs: number;
}

export interface OtaAppDeps {
  cfg: Config;
  models: CloudModels;
  s3: S3Client;
  temporal: WorkflowClient;
  log: Logger;
  options?: Partial<OtaAppOptions>;
  /**
   * The only buckets the OTA API reads, writes or deletes in (any `s3_bucket` parameter); others answer 400.
   * Default: `[DEFAULT_BUCKET]`. The store holds other services' buckets (cloud-sync's robot-files), which an
   * authenticated OTA caller must not be able to touch.
   */
  otaBuckets?: readonly string[];
}

/** Deps with every option resolved; what route modules receive. */
export interface OtaContext extends Omit<OtaAppDeps, 'options' | 'otaBuckets'> {
  options: OtaAppOptions;
  otaBuckets: readonly string[];
}

export const DEFAULT_OPTIONS: OtaAppOptions = {
  queryTimeoutMs: 2000,
  temporalTimeoutMs: 10000,
  healthTimeoutMs: 3000,
  healthCacheMs: 2000,
  partSizeBytes: 8 * 1024 * 1024,
  uploadQueueSize: 2,
  maxFilesPerRequest: 100,
  reconcileIntervalMs: 60_000,
  reconcileGraceMs: 30_000,
  reconcileMaxJobsPerPass: 500,
  uploadLockTtlMs: 5 * 60_000,
  archiveIntervalMs: 5_000,
  archiveAfterMs: 10_000,
  archiveMaxJobsPerPass: 1000,
  deployBatching: true,
  deployBatchWindowMs: 20,
  deployBatchMaxJobs: 50,
};

/** The reference's default bucket for every endpoint that has one. */
export const DEFAULT_BUCKET = 'files';

export function resolveContext(deps: OtaAppDeps): OtaContext {
  const { options, otaBuckets, ...rest } = deps;
  return {
    ...rest,
    log: deps.log.child({ component: 'ota-api' }),
    // The configuration's settings, then the caller's (tests) on top.
    options: { ...DEFAULT_OPTIONS, ...fromConfig(deps.cfg), ...options },
    otaBuckets: [...(otaBuckets ?? [DEFAULT_BUCKET])],
  };
}

function fromConfig(cfg: Config): Partial<OtaAppOptions> {
  const b = cfg.otaDeployBatch;
  return { deployBatching: b.enabled, deployBatchWindowMs: b.windowMs, deployBatchMaxJobs: b.maxJobs, reconcileGraceMs: b.reconcileGraceMs };
}

/** null when the API may use `bucket`, else why not (the caller prefixes the field name; answered 400). */
export function bucketProblem(ctx: Pick<OtaContext, 'otaBuckets'>, bucket: string): string | null {
  return ctx.otaBuckets.includes(bucket) ? null : `not an OTA bucket (allowed: ${ctx.otaBuckets.join(', ')})`;
}
