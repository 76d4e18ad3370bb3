// Database documents → API JSON. Explicit field lists, so internal fields (_id, mode, deployment_id) never leak
// and the response shape does not change when someone adds a field to a model.
import type { DeployTarget, OtaFile, OtaJob } from '../../common/models/ota';
import type { OtaJobProgress } from '../../workflows/ota-contract';
import { isForwardTransition, isTerminalStatus } from '../../workflows/ota-status';
import type { DeployTargetRow, FileRow, JobState } from './schemas';

const iso = (d: Date | string | null | undefined): string => (d ? new Date(d).toISOString() : '');

function stringMap(v: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (v && typeof v === 'object' && !Array.isArray(v)) {
    for (const [k, val] of Object.entries(v as Record<string, unknown>)) out[k] = typeof val === 'string' ? val : JSON.stringify(val);
  }
  return out;
}

export function fileRow(f: OtaFile): FileRow {
  return {
    s3_bucket: f.s3_bucket,
    s3_object_name: f.s3_object_name,
    file_name: f.file_name,
    timestamp: iso(f.timestamp),
    robot_id: f.robot_id ?? '',
    robot_type: f.robot_type ?? '',
    robot_version: f.robot_version ?? '',
    deploy_path: f.deploy_path ?? '',
    sha256: f.sha256,
    size: f.size,
    file_metadata: stringMap(f.file_metadata),
    valid: f.valid ?? true,
    version: f.version ?? 'v1',
  };
}

export function jobState(j: OtaJob, live: OtaJobProgress | null): JobState {
  return {
    job_id: j._id,
    // A running job stores nothing until it is decided (workflows/ota-deployment.ts, lean run): its live status
    // (RECEIVED, DOWNLOADING) comes from the workflow, and only ever moves the stored one forward. A terminal
    // status is shown once it is stored, never before.
    status: live && !isTerminalStatus(live.status) && isForwardTransition(j.status, live.status) ? live.status : j.status,
    robot_id: j.robot_id,
    deploy_path: j.deploy_path,
    deploy_msg: j.deploy_msg,
    timestamp: iso(j.timestamp),
    error_msg: j.error_msg ?? null,
    progress: live?.progress ?? null,
    robot_online: live ? live.robotOnline : null,
    updated_at: iso(j.updated_at),
    finished_at: j.finished_at ? iso(j.finished_at) : null,
    s3_bucket: j.s3_bucket,
    s3_object_name: j.s3_object_name,
    file_name: j.file_name ?? '',
    sha256: j.sha256,
    size: j.size,
    workflow_id: j.workflow_id,
    timeout_s: j.timeout_s ?? null,
    transitions: (j.transitions ?? []).map((t) => ({ status: t.status as JobState['status'], error_msg: t.error_msg ?? null, at: iso(t.at) })),
  };
}

export function deployTargetRow(t: DeployTarget): DeployTargetRow {
  return {
    robot_id: t.robot_id,
    deploy_path: t.deploy_path,
    s3_bucket: t.s3_bucket,
    s3_object_name: t.s3_object_name,
    version: t.version ?? 'v1',
    sha256: t.sha256 ?? '',
    job_id: t.job_id ?? '',
    updated_at: iso(t.updated_at),
  };
}
