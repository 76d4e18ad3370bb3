// An OTA job document as the reference service stores it, plus ours; built by the deploy routes (one job each)
// and by rollouts (many at once, in the rollout workflow's first activity).
import { randomUUID } from 'node:crypto';
import type { OtaJob } from './models/ota';
import { otaWorkflowId } from '../workflows/ota-contract';

/** Python `json.dumps` of a flat string map (", " / ": " separators, non-ASCII escaped), as the reference's
 * `deploy_msg` is stored and sent, so a consumer comparing it byte for byte sees the same payload. */
export function pythonJsonDumps(obj: Record<string, string>): string {
  const str = (s: string) => JSON.stringify(s).replace(/[\u0080-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  return `{${Object.entries(obj)
    .map(([k, v]) => `${str(k)}: ${str(v)}`)
    .join(', ')}}`;
}

export interface JobSpec {
  robotId: string;
  deployPath: string;
  file: { s3_bucket: string; s3_object_name: string; file_name: string; sha256: string; size: number };
  timeoutS: number | null;
  /** Rollout jobs: driven by their rollout's workflow, not one of their own. */
  deploymentId?: string;
  workflowId?: string;
}

export function buildJob(spec: JobSpec, now: Date, jobId: string = randomUUID()): OtaJob {
  return {
    _id: jobId,
    robot_id: spec.robotId,
    deploy_path: spec.deployPath,
    s3_bucket: spec.file.s3_bucket,
    s3_object_name: spec.file.s3_object_name,
    file_name: spec.file.file_name,
    sha256: spec.file.sha256,
    size: spec.file.size,
    status: 'PENDING',
    error_msg: null,
    // The reference's payload, byte for byte (its daemon and tools read this field).
    deploy_msg: pythonJsonDumps({
      job_id: jobId,
      s3_bucket: spec.file.s3_bucket,
      s3_object_name: spec.file.s3_object_name,
      deploy_path: spec.deployPath,
    }),
    timestamp: now,
    updated_at: now,
    finished_at: null,
    workflow_id: spec.workflowId ?? otaWorkflowId(jobId),
    timeout_s: spec.timeoutS,
    deployment_id: spec.deploymentId ?? null,
  };
}

