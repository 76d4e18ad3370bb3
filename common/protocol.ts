// The MQTT wire protocol between the cloud and the robots' OTA daemons: a superset of the reference
// ota-file-service (its four deploy fields, its state-map shape, its bare-job-id ack), see DESIGN.md.
// The types and constants live in ota-wire.ts (dependency-free, bundled by the daemon); here are the zod schemas
// the cloud validates with. Pure module: workflows may import its types and constants (no Node built-ins here).
import { z } from 'zod';

import { ROBOT_ID_PATTERN, ROBOT_ID_RULE, ROBOT_STATUSES, type DeployMessage as WireDeployMessage } from './ota-wire';

export * from './ota-wire';

export const robotIdSchema = z.string().regex(ROBOT_ID_PATTERN, ROBOT_ID_RULE);

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
export type DeployMessage = WireDeployMessage;
// The schema and the wire type must describe the same message.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const _sameDeployMessage: Same<z.infer<typeof deployMessageSchema>, WireDeployMessage> = true;
void _sameDeployMessage;

export const jobReportSchema = z.object({
  status: z.enum(ROBOT_STATUSES),
  error_msg: z.string().nullable().optional(),
  progress: z.number().min(0).max(100).optional(),
});
export type { JobReport } from './ota-wire';

export const stateMessageSchema = z.record(z.string().min(1), jobReportSchema);

