// OTA activities that talk to robots over MQTT (cloud listener, user `cloud`, ACL `ota/#`).
// dispatchDeploy builds the deploy message itself, including a short-lived presigned download URL: the URL is
// a bearer credential, so it must never appear in an activity result or input (workflow history is readable
// by every operator in Temporal Web). The workflow only ever sees 'dispatched' | 'robot_offline'.
import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { log } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import type { MqttClient } from 'mqtt';
import type { Config } from '../../common/config';
import type { OtaJob, OtaModels } from '../../common/models/ota';
import { deployMessageSchema, robotIdSchema, topics, type DeployMessage } from '../../common/protocol';
import { newestSigningKey, loadSigningKeys } from '../../common/signing-keys';
import { signDeploy, type SigningKey } from '../../common/signing';
import { withDbTimeout } from '../db/timeout';
import { recordStatus, type RecordJobStatusResult } from '../db/ota-jobs';
import type { JobStatus } from '../../common/protocol';
import { publishQos1 } from './connection';
import type { OtaDispatchFields } from '../../workflows/ota-contract';

export type DispatchOutcome = 'dispatched' | 'robot_offline';

/** Error types the workflow treats as final (retrying cannot fix them). */
export const OTA_JOB_NOT_FOUND = 'OtaJobNotFound';
export const OTA_JOB_INVALID = 'OtaJobInvalid';

export interface OtaMqttActivityDeps {
  mqtt: MqttClient;
  models: Pick<OtaModels, 'OtaJob' | 'OtaJobArchive' | 'RobotPresence' | 'DeployTarget' | 'OtaRolloutResult'>;
  s3: S3Client;
  cfg: Pick<Config, 'mongo' | 'dataDir' | 'env' | 'ota'>;
  /** The cloud's signing keys, oldest first (the newest signs); read per dispatch so a rotation needs no restart. */
  signingKeys?: () => SigningKey[];
  /**
   * Lifetime of the presigned URL and of the deploy message at the broker (the message expires with its URL:
   * a robot that comes back later gets a fresh dispatch, with a fresh URL, from the workflow instead).
   */
  urlTtlSeconds?: number;
}

export const DEFAULT_URL_TTL_SECONDS = 3600;
/** The slowest link a download should still finish on before its URL expires (a robot on a weak uplink). */
const SLOW_LINK_BYTES_PER_SECOND = 128 * 1024;
/** SigV4 presigned URLs cannot live longer than 7 days. */
const MAX_URL_TTL_SECONDS = 7 * 24 * 3600;

/**
 * A URL must outlive the download it serves, resumptions included: large files get longer-lived URLs. The
 * deploy *message* still expires after `ttlSeconds`, so a robot that was away gets a fresh dispatch instead.
 */
export function urlTtlForSize(size: number, ttlSeconds: number): number {
  return Math.min(MAX_URL_TTL_SECONDS, Math.max(ttlSeconds, Math.ceil(size / SLOW_LINK_BYTES_PER_SECOND)));
}

/** The job fields a deploy message is built from. */
export type DispatchableJob = Pick<OtaJob, '_id' | 's3_bucket' | 's3_object_name' | 'deploy_path' | 'sha256' | 'size' | 'mode'>;

/** A presigned GET of the job's object that outlives a slow download of it (urlTtlForSize). */
export function presignDownload(s3: S3Client, job: Pick<OtaJob, 's3_bucket' | 's3_object_name' | 'size'>, urlTtlSeconds: number): Promise<string> {
  return getSignedUrl(s3, new GetObjectCommand({ Bucket: job.s3_bucket, Key: job.s3_object_name }), {
    expiresIn: urlTtlForSize(job.size, urlTtlSeconds),
  });
}

/**
 * The deploy message of `job` for `robotId` (reference fields first, then ours), signed with `key`; the
 * signature expires with the message at the broker, so a robot that returns later gets a fresh dispatch.
 * Throws non-retryable (naming the fields, never their values: the url is among them) when it is invalid.
 */
export function signedDeployMessage(job: DispatchableJob, robotId: string, url: string, key: SigningKey, urlTtlSeconds: number): string {
  const candidate: DeployMessage = {
    job_id: job._id,
    s3_bucket: job.s3_bucket,
    s3_object_name: job.s3_object_name,
    deploy_path: job.deploy_path,
    sha256: job.sha256,
    size: job.size,
    url,
    ...(typeof job.mode === 'number' ? { mode: job.mode } : {}),
  };
  const expires_at = Math.floor(Date.now() / 1000) + urlTtlSeconds;
  candidate.signature = signDeploy(key, {
    job_id: job._id,
    robot_id: robotId,
    sha256: job.sha256,
    size: job.size,
    deploy_path: job.deploy_path,
    expires_at,
  });
  const parsed = deployMessageSchema.safeParse(candidate);
  if (!parsed.success) {
    const fields = [...new Set(parsed.error.issues.map((i) => i.path.join('.')))].join(', ');
    throw ApplicationFailure.nonRetryable(`OTA job ${job._id}: deploy message invalid (${fields})`, OTA_JOB_INVALID);
  }
  return JSON.stringify(parsed.data);
}

export function createOtaMqttActivities({
  mqtt,
  models,
  s3,
  cfg,
  urlTtlSeconds = DEFAULT_URL_TTL_SECONDS,
  signingKeys = () => loadSigningKeys(cfg),
}: OtaMqttActivityDeps) {
  const { OtaJob, RobotPresence } = models;
  const dbTimeoutMs = cfg.mongo.timeoutMs;

  return {
    /**
     * Publishes job `jobId` on `ota/<robot>/deploy` (QoS 1) if the robot is online; otherwise returns
     * 'robot_offline' without publishing, and the workflow waits for the robot's presence signal.
     * Re-dispatching a job is safe: the daemon dedupes by job id.
     */
    async dispatchDeploy(jobId: string, jobRobotId?: string, fields?: OtaDispatchFields): Promise<DispatchOutcome> {
      // The workflow carries the job's fields (one database read less per dispatch); older runs read the job.
      const job = fields && jobRobotId ? { ...fields, _id: jobId, robot_id: jobRobotId, mode: fields.mode ?? undefined } : await withDbTimeout('load job', dbTimeoutMs, OtaJob.findById(jobId).lean());
      if (!job) throw ApplicationFailure.nonRetryable(`OTA job ${jobId} does not exist`, OTA_JOB_NOT_FOUND);
      const robot = robotIdSchema.safeParse(job.robot_id);
      if (!robot.success) throw ApplicationFailure.nonRetryable(`OTA job ${jobId}: invalid robot_id`, OTA_JOB_INVALID);
      const robotId = robot.data;

      const presence = await withDbTimeout('load presence', dbTimeoutMs, RobotPresence.findById(robotId).lean());
      // No presence record means the robot has never been seen: same as offline; its first "online" wakes us.
      if (!presence?.online) {
        log.info('robot offline, deploy deferred', { jobId, robotId });
        return 'robot_offline';
      }

      const url = await presignDownload(s3, job, urlTtlSeconds);
      const message = signedDeployMessage(job, robotId, url, newestSigningKey(signingKeys()), urlTtlSeconds);
      await publishQos1(mqtt, topics.deploy(robotId), message, { messageExpirySeconds: urlTtlSeconds });
      log.info('deploy published', { jobId, robotId, topic: topics.deploy(robotId) });
      return 'dispatched';
    },

    /**
     * The end of a job in one activity (one Temporal operation instead of three): stores the terminal status
     * (with the statuses passed through on the way, guarded like recordJobStatus), tells the robot to abort when
     * the cloud ended the job (CANCELED / TIMED_OUT), then acks so the daemon forgets it. Every step is
     * idempotent, so a retry after a partial run repeats nothing harmful.
     */
    async finishJob(
      jobId: string,
      robotId: string,
      status: JobStatus,
      error_msg: string | null,
      passedThrough: JobStatus[],
    ): Promise<RecordJobStatusResult> {
      const stored = await recordStatus(models, jobId, status, error_msg, passedThrough, dbTimeoutMs);
      if (status === 'CANCELED' || status === 'TIMED_OUT') await publishQos1(mqtt, topics.cancel(robotId), jobId);
      await publishQos1(mqtt, topics.ack(robotId), jobId);
      return stored;
    },

    /** Tells the daemon the cloud has stored the job's terminal state, so it can forget the job. */
    async publishAck(robotId: string, jobId: string): Promise<void> {
      await publishQos1(mqtt, topics.ack(robotId), jobId);
    },

    /**
     * Tells the daemon to abort the job and never install it. No message expiry: a robot that is offline now
     * may still hold the deploy message (or a half-done download) and must learn of the cancel when it returns.
     */
    async publishCancel(robotId: string, jobId: string): Promise<void> {
      await publishQos1(mqtt, topics.cancel(robotId), jobId);
    },
  };
}

export type OtaMqttActivities = ReturnType<typeof createOtaMqttActivities>;
