// The MQTT wire protocol's types, constants and hand-written checks, with no dependency: the robot daemon bundles
// this file (common/protocol.ts adds the zod schemas the cloud validates with, and re-exports everything here).
// Pure module: workflows may import it.

export const JOB_STATUSES = ['PENDING', 'RECEIVED', 'DOWNLOADING', 'COMPLETED', 'FAILED', 'CANCELED', 'TIMED_OUT'] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];
/** Statuses a robot may report; CANCELED and TIMED_OUT are decided by the cloud only. */
export const ROBOT_STATUSES = ['PENDING', 'RECEIVED', 'DOWNLOADING', 'COMPLETED', 'FAILED'] as const;
export type RobotStatus = (typeof ROBOT_STATUSES)[number];
export const TERMINAL_STATUSES: readonly JobStatus[] = ['COMPLETED', 'FAILED', 'CANCELED', 'TIMED_OUT'];
export const isTerminal = (s: JobStatus): boolean => TERMINAL_STATUSES.includes(s);

/**
 * Robot ids become MQTT topic levels, user names, client ids and folder names: a safe alphabet, and never
 * `cloud…`, the prefix of the cloud's own MQTT users and client ids.
 */
export const ROBOT_ID_PATTERN = /^(?![Cc][Ll][Oo][Uu][Dd])[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
export const ROBOT_ID_RULE = 'robot_id must match [A-Za-z0-9][A-Za-z0-9_.-]{0,63} and not start with "cloud"';

export const topics = {
  deploy: (robotId: string) => `ota/${robotId}/deploy`,
  state: (robotId: string) => `ota/${robotId}/state`,
  ack: (robotId: string) => `ota/${robotId}/ack`,
  /** Ours: the bare job id of a job the cloud canceled; the daemon aborts it and never installs it. */
  cancel: (robotId: string) => `ota/${robotId}/cancel`,
  /** Retained "online" / "offline"; the daemon's Last Will publishes "offline". */
  presence: (robotId: string) => `ota/${robotId}/presence`,
  allStates: 'ota/+/state',
  allPresence: 'ota/+/presence',
} as const;

/** Splits `ota/<robot>/<operation>`; null for anything else. */
export function parseTopic(topic: string): { robotId: string; operation: string } | null {
  const m = /^ota\/([^/]+)\/([^/]+)$/.exec(topic);
  if (!m || !ROBOT_ID_PATTERN.test(m[1])) return null;
  return { robotId: m[1], operation: m[2] };
}

export interface DeploySignatureField {
  key_id: string;
  expires_at: number;
  value: string;
}

export interface DeployMessage {
  job_id: string;
  s3_bucket: string;
  s3_object_name: string;
  deploy_path: string;
  // Ours (optional so a reference-shaped message is still accepted by our daemon):
  sha256?: string;
  size?: number;
  url?: string;
  mode?: number;
  /** Ed25519 signature by the cloud (common/signing.ts); required by a daemon whose config lists signing keys. */
  signature?: DeploySignatureField;
}

export interface JobReport {
  status: RobotStatus;
  error_msg?: string | null;
  progress?: number;
}
export type StateMessage = Record<string, JobReport>;

export const PRESENCE_ONLINE = 'online';
export const PRESENCE_OFFLINE = 'offline';

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const text = (v: unknown, max = Infinity) => typeof v === 'string' && v.length >= 1 && v.length <= max;
const int = (v: unknown, min: number, max: number) => typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max;

function isUrl(v: unknown): boolean {
  if (typeof v !== 'string') return false;
  try {
    new URL(v);
    return true;
  } catch {
    return false;
  }
}

/**
 * Checks a parsed deploy message field by field (the same rules as protocol.ts's deployMessageSchema). Returns the
 * message with only known fields, or the problems, naming fields and rules, never values (a URL is a credential).
 */
export function checkDeployMessage(v: unknown): { ok: true; value: DeployMessage } | { ok: false; issues: string[] } {
  if (!isObject(v)) return { ok: false, issues: ['(message): expected an object'] };
  const issues: string[] = [];
  for (const k of ['job_id', 's3_bucket', 's3_object_name', 'deploy_path'] as const) if (!text(v[k])) issues.push(`${k}: required non-empty string`);
  if (v.sha256 !== undefined && !(typeof v.sha256 === 'string' && /^[0-9a-f]{64}$/.test(v.sha256))) issues.push('sha256: 64 lowercase hex digits');
  if (v.size !== undefined && !int(v.size, 0, Number.MAX_SAFE_INTEGER)) issues.push('size: non-negative integer');
  if (v.url !== undefined && !isUrl(v.url)) issues.push('url: invalid URL');
  if (v.mode !== undefined && !int(v.mode, 0, 0o7777)) issues.push('mode: integer 0..0o7777');
  const sig = v.signature;
  if (sig !== undefined && !(isObject(sig) && text(sig.key_id, 100) && int(sig.expires_at, 0, Number.MAX_SAFE_INTEGER) && text(sig.value, 200))) {
    issues.push('signature: expected {key_id, expires_at, value}');
  }
  if (issues.length > 0) return { ok: false, issues };
  const value: DeployMessage = {
    job_id: v.job_id as string,
    s3_bucket: v.s3_bucket as string,
    s3_object_name: v.s3_object_name as string,
    deploy_path: v.deploy_path as string,
  };
  if (v.sha256 !== undefined) value.sha256 = v.sha256 as string;
  if (v.size !== undefined) value.size = v.size as number;
  if (v.url !== undefined) value.url = v.url as string;
  if (v.mode !== undefined) value.mode = v.mode as number;
  if (isObject(sig)) value.signature = { key_id: sig.key_id as string, expires_at: sig.expires_at as number, value: sig.value as string };
  return { ok: true, value };
}
