// What the OTA app is built from. Everything is passed in, so tests run the same app against the real servers
// with their own database name, task queue and timeouts.
import type { S3Client } from '@aws-sdk/client-s3';
import type { WorkflowClient } from '@temporalio/client';
import type { Config } from '../../common/config';
import type { Logger } from '../../common/logger';
import type { OtaModels } from '../../common/models/ota';

export interface OtaAppOptions {
  /** Upper bound for the live-progress query of a running job (GET /job_state); the DB answer is sent without it. */
  queryTimeoutMs: number;
  /** Upper bound for starting or signalling a workflow. */
  temporalTimeoutMs: number;
  /** Per dependency in GET /health. */
  healthTimeoutMs: number;
  /** Multipart part size for uploads to S3 (memory per upload is about partSize x uploadQueueSize). */
  partSizeBytes: number;
  uploadQueueSize: number;
  /** Most file parts one upload/deploy request may carry. */
  maxFilesPerRequest: number;
}

export interface OtaAppDeps {
  cfg: Config;
  models: OtaModels;
  s3: S3Client;
  temporal: WorkflowClient;
  log: Logger;
  options?: Partial<OtaAppOptions>;
}

/** Deps with every option resolved; what route modules receive. */
export interface OtaContext extends Omit<OtaAppDeps, 'options'> {
  options: OtaAppOptions;
}

export const DEFAULT_OPTIONS: OtaAppOptions = {
  queryTimeoutMs: 2000,
  temporalTimeoutMs: 10000,
  healthTimeoutMs: 3000,
  partSizeBytes: 8 * 1024 * 1024,
  uploadQueueSize: 2,
  maxFilesPerRequest: 100,
};

/** The reference's default bucket for every endpoint that has one. */
export const DEFAULT_BUCKET = 'files';
