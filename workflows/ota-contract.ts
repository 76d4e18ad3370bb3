// What clients (API, MQTT bridge, tests) and the otaDeployment workflow agree on: ids, input, signals, query.
// Workflow-safe module: only @temporalio/workflow definitions and types.
import { defineQuery, defineSignal } from '@temporalio/workflow';
import type { JobReport, JobStatus } from '../common/protocol';

export const OTA_DEPLOYMENT_WORKFLOW = 'otaDeployment';

/** The workflow id carries the job id, so an operator finds a job's run in Temporal Web by its id. */
export const otaWorkflowId = (jobId: string): string => `ota-job-${jobId}`;

export interface OtaDeploymentInput {
  jobId: string;
  robotId: string;
  /** Optional: the job ends TIMED_OUT if not terminal after this many seconds. */
  timeoutSeconds?: number | null;
  /**
   * Liveness: a dispatched job the robot has not reported on after this many seconds is dispatched again (fresh
   * URL), the wait doubling each time up to 10 minutes. Default 60 s (under load the bridge itself can lag tens of seconds: a shorter wait re-sends jobs that are fine); tests shorten it.
   */
  noReportRedispatchSeconds?: number;
  /**
   * What the deploy message is built from, as the API stored it (no secret: the URL is presigned at each dispatch),
   * so a dispatch needs no read of the job. Absent (older runs, the reconciler): the dispatch reads the job.
   */
  job?: OtaDispatchFields;
}

/** The job fields a deploy message needs (see OtaDeploymentInput.job). */
export interface OtaDispatchFields {
  s3_bucket: string;
  s3_object_name: string;
  deploy_path: string;
  sha256: string;
  size: number;
  mode?: number | null;
}

export interface OtaDeploymentResult {
  jobId: string;
  status: JobStatus;
  error_msg: string | null;
  dispatches: number;
}

export interface OtaJobProgress {
  status: JobStatus;
  progress: number | null;
  error_msg: string | null;
  robotOnline: boolean;
  dispatches: number;
}

/** A robot's report for this job (one entry of its state map), forwarded by the bridge. */
export const robotReportSignal = defineSignal<[JobReport]>('robotReport');
/** The robot's retained presence changed (online / offline). */
export const robotPresenceSignal = defineSignal<[{ online: boolean }]>('robotPresence');
/** Operator cancel (POST /job/{id}/cancel). Temporal Web's "Request cancellation" is handled the same way. */
export const cancelJobSignal = defineSignal<[{ reason?: string }]>('cancelJob');
export const jobProgressQuery = defineQuery<OtaJobProgress>('jobProgress');
