// The MQTT wire protocol between the cloud and the robots' OTA daemons: a superset of the reference
// ota-file-service (its four deploy fields, its state-map shape, its bare-job-id ack), see DESIGN.md.
// Pure module: workflows may import its types and constants (no Node built-ins here).
import { z } from 'zod';

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
export const robotIdSchema = z
  .string()
  .regex(ROBOT_ID_PATTERN, 'robot_id must match [A-Za-z0-9][A-Za-z0-9_.-]{0,63} and not start with "cloud"');

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

export const deployMessageSchema = z.object({
  job_id: z.string().min(1),
  s3_bucket: z.string().min(1),
  s3_object_name: z.string().min(1),
  deploy_path: z.string().min(1),
  // Ours (optional so a reference-shaped message is still accepted by our daemon):
  sha256: z.string().regex(/^[0-9a-f]{64}$/).optional(),
  size: z.number().int().nonnegative().optional(),
  url: z.string().url().optional(),
  mode: z.number().int().min(0).max(0o7777).optional(),
  /** Ed25519 signature by the cloud (common/signing.ts); required by a daemon whose config lists signing keys. */
  signature: z
    .object({ key_id: z.string().min(1).max(100), expires_at: z.number().int().nonnegative(), value: z.string().min(1).max(200) })
    .optional(),
});
export type DeployMessage = z.infer<typeof deployMessageSchema>;

export const jobReportSchema = z.object({
  status: z.enum(ROBOT_STATUSES),
  error_msg: z.string().nullable().optional(),
  progress: z.number().min(0).max(100).optional(),
});
export type JobReport = z.infer<typeof jobReportSchema>;

export const stateMessageSchema = z.record(z.string().min(1), jobReportSchema);
export type StateMessage = z.infer<typeof stateMessageSchema>;

export const PRESENCE_ONLINE = 'online';
export const PRESENCE_OFFLINE = 'offline';
