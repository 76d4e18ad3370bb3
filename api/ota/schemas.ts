// Request and response schemas of the OTA API: one zod definition per shape validates input and documents it
// (zod-to-openapi builds /api/v1/openapi.json from the same objects). Field names, defaults and optionality
// follow the reference service (notes/ota-file-service.md §1); stricter checks are marked "ours".
import { extendZodWithOpenApi } from '@asteasolutions/zod-to-openapi';
import { z } from 'zod';
import { JOB_STATUSES } from '../../common/protocol';
import { BUCKET_NAME_PATTERN, METADATA_KEY_PATTERN } from './naming';
import { DEFAULT_BUCKET } from './types';

extendZodWithOpenApi(z);

// ---- building blocks ---------------------------------------------------------------------------------------
export const bucketSchema = z
  .string()
  .regex(BUCKET_NAME_PATTERN, 'must be a valid S3 bucket name')
  .openapi({
    example: DEFAULT_BUCKET,
    description: `S3 bucket that stores the file: one of the OTA buckets (default "${DEFAULT_BUCKET}"); any other answers 400.`,
  });

const shortText = z.string().max(256);

export const fileMetadataSchema = z
  .record(z.string().regex(METADATA_KEY_PATTERN, 'keys must be 1-128 characters without "." or a leading "$"'), z.string().max(4096))
  .openapi({ example: { type: 'test' }, description: 'String-to-string map of custom metadata.' });

/** Seconds after which a job that is not terminal ends TIMED_OUT (ours). */
export const timeoutSecondsSchema = z.coerce
  .number()
  .int()
  .min(1)
  .max(30 * 24 * 3600)
  .optional()
  .openapi({ description: 'Optional: the job ends TIMED_OUT if not terminal after this many seconds.', example: 3600 });

// ---- multipart JSON form fields ----------------------------------------------------------------------------
export const fileInfoSchema = z
  .object({
    s3_bucket: bucketSchema.default(DEFAULT_BUCKET),
    s3_object_name: z.string().default('').openapi({ description: 'Optional; generated as `<filename>_<uuid4>` when empty.' }),
    robot_id: shortText.default(''),
    deploy_path: z.string().default('').openapi({ description: 'Default deploy path (absolute) used by deploy_from_s3.' }),
    robot_type: shortText.default(''),
    robot_version: shortText.default(''),
    file_metadata: fileMetadataSchema.default({}),
  })
  .openapi('FileInfo');
export type FileInfo = z.infer<typeof fileInfoSchema>;

export const fileInfoListSchema = z.object({ file_list: z.array(fileInfoSchema) }).openapi('FileInfoList');

/** Same fields as FileInfo; robot_id and deploy_path are required (checked explicitly, 400 naming the field). */
export const fileDeployInfoSchema = fileInfoSchema
  .extend({
    robot_id: shortText.default('').openapi({ description: 'Required. Robot to deploy to.', example: 'robot01' }),
    deploy_path: z.string().default('').openapi({ description: 'Required. Absolute path on the robot.', example: '/tmp/test.txt' }),
  })
  .openapi('FileDeployInfo');
export const fileDeployListSchema = z.object({ file_list: z.array(fileDeployInfoSchema) }).openapi('FileDeployInfoList');

export const fileUpdateSchema = z
  .object({
    s3_bucket: bucketSchema.default(DEFAULT_BUCKET),
    s3_object_name: z.string().min(1),
    robot_id: shortText.optional(),
    robot_type: shortText.optional(),
    robot_version: shortText.optional(),
    deploy_path: z.string().optional(),
    file_metadata: fileMetadataSchema.optional(),
  })
  .openapi('FileUpdate');
export type FileUpdate = z.infer<typeof fileUpdateSchema>;

// ---- query parameters --------------------------------------------------------------------------------------
export const listQuerySchema = z.object({
  s3_bucket: z.string().optional(),
  s3_object_name: z.string().optional(),
  robot_id: z.string().optional(),
  robot_type: z.string().optional(),
  deploy_path: z.string().optional(),
  file_metadata: z.string().optional().openapi({ description: 'JSON object of metadata key/values that must all match.', example: '{"type":"test"}' }),
});

export const objectQuerySchema = z.object({
  s3_bucket: bucketSchema.default(DEFAULT_BUCKET),
  s3_object_name: z.string().min(1),
});

export const deployFromS3QuerySchema = z.object({
  robot_id: z.string().optional().openapi({ description: 'Required. Robot to deploy to.', example: 'robot01' }),
  s3_bucket: bucketSchema.default(DEFAULT_BUCKET),
  s3_object_name: z.string().min(1),
  deploy_path: z.string().optional().openapi({ description: "Defaults to the file's deploy_path." }),
  timeout_s: timeoutSecondsSchema,
});

export const deployQuerySchema = z.object({ timeout_s: timeoutSecondsSchema });

/** An empty query value (`?status=` from a form) means "not given". */
const blankAsMissing = <T extends z.ZodType>(schema: T) => z.preprocess((v) => (v === '' ? undefined : v), schema);

export const jobsQuerySchema = z.object({
  robot_id: blankAsMissing(z.string().optional()),
  status: blankAsMissing(z.enum(JOB_STATUSES).optional()),
  deployment_id: blankAsMissing(z.string().max(128).optional().openapi({ description: 'Only the jobs of this rollout.' })),
  limit: blankAsMissing(z.coerce.number().int().min(1).max(500).default(50)),
  cursor: blankAsMissing(z.string().optional().openapi({ description: 'next_cursor of the previous page.' })),
});

export const jobIdParamSchema = z.object({ job_id: z.string().min(1).max(128) });
export const robotIdParamSchema = z.object({ robot_id: z.string().min(1).max(128) });
export const cancelBodySchema = z.object({ reason: z.string().max(500).optional() }).openapi('CancelRequest');

// ---- responses ---------------------------------------------------------------------------------------------
const isoDate = z.string().openapi({ format: 'date-time' });

export const fileRowSchema = z
  .object({
    s3_bucket: z.string(),
    s3_object_name: z.string(),
    file_name: z.string(),
    timestamp: isoDate,
    robot_id: z.string(),
    robot_type: z.string(),
    robot_version: z.string(),
    deploy_path: z.string(),
    sha256: z.string(),
    size: z.number().int().openapi({ description: 'Bytes (ours).' }),
    file_metadata: z.record(z.string(), z.string()),
    valid: z.boolean(),
    version: z.string(),
  })
  .openapi('FileRow');
export type FileRow = z.infer<typeof fileRowSchema>;

export const fileUploadResultSchema = z
  .object({
    s3_bucket: z.string(),
    s3_object_name: z.string(),
    robot_id: z.string(),
    deploy_path: z.string(),
    filename: z.string(),
    state: z.enum(['UPLOADED', 'PENDING', 'FAILED']),
    error_msg: z.string().nullable(),
    sha256: z.string().optional(),
    size: z.number().int().optional(),
  })
  .openapi('FileUploadResult');
export type FileUploadResult = z.infer<typeof fileUploadResultSchema>;

export const fileDeployResultSchema = fileUploadResultSchema.extend({ job_id: z.string() }).openapi('FileDeployResult');
export type FileDeployResult = z.infer<typeof fileDeployResultSchema>;

export const jobStateSchema = z
  .object({
    job_id: z.string(),
    status: z.enum(JOB_STATUSES),
    robot_id: z.string(),
    deploy_path: z.string(),
    deploy_msg: z.string(),
    timestamp: isoDate,
    error_msg: z.string().nullable(),
    progress: z.number().nullable().openapi({ description: 'Live download progress 0-100 from the workflow while the job runs (ours).' }),
    robot_online: z.boolean().nullable(),
    updated_at: isoDate,
    finished_at: isoDate.nullable(),
    s3_bucket: z.string(),
    s3_object_name: z.string(),
    file_name: z.string(),
    sha256: z.string(),
    size: z.number().int(),
    workflow_id: z.string(),
    timeout_s: z.number().nullable(),
    transitions: z
      .array(z.object({ status: z.enum(JOB_STATUSES), error_msg: z.string().nullable(), at: isoDate }))
      .openapi({ description: 'Every status change after PENDING, in order (ours).' }),
  })
  .openapi('JobState');
export type JobState = z.infer<typeof jobStateSchema>;

export const jobListSchema = z.object({ jobs: z.array(jobStateSchema), next_cursor: z.string().nullable() }).openapi('JobList');

export const cancelResultSchema = z
  .object({ job_id: z.string(), status: z.enum(JOB_STATUSES), cancel_requested: z.literal(true) })
  .openapi('CancelResult');

export const deployTargetRowSchema = z
  .object({
    robot_id: z.string(),
    deploy_path: z.string(),
    s3_bucket: z.string(),
    s3_object_name: z.string(),
    version: z.string(),
    sha256: z.string(),
    job_id: z.string(),
    updated_at: isoDate,
  })
  .openapi('DeployTarget');
export type DeployTargetRow = z.infer<typeof deployTargetRowSchema>;

export const healthSchema = z
  .object({
    status: z.string(),
    dependencies: z.object({ mongo: z.string(), s3: z.string(), temporal: z.string() }),
  })
  .openapi('Health');
export type Health = z.infer<typeof healthSchema>;

export const errorSchema = z
  .object({ detail: z.union([z.string(), z.array(z.record(z.string(), z.unknown()))]) })
  .openapi('Error');

// ---- operator security (ours): token revocation and the audit trail ----------------------------------------
export const revokeBodySchema = z
  .object({
    jti: z.string().min(1).max(200).openapi({ description: 'The token id (`jti` claim; `npm run token` prints it on stderr).' }),
    reason: z.string().max(500).optional(),
  })
  .openapi('RevokeRequest');

export const revocationSchema = z
  .object({
    jti: z.string(),
    revoked_at: isoDate,
    expires_at: isoDate.openapi({ description: 'When the entry is dropped: no token with this id can be valid after it.' }),
  })
  .openapi('Revocation');

export const auditQuerySchema = z.object({
  limit: blankAsMissing(z.coerce.number().int().min(1).max(500).default(100)),
  cursor: blankAsMissing(z.string().max(200).optional().openapi({ description: 'next_cursor of the previous page.' })),
  sub: blankAsMissing(z.string().max(256).optional().openapi({ description: "Only this caller's entries (token subject)." })),
  jti: blankAsMissing(z.string().max(200).optional().openapi({ description: "Only this token's entries." })),
});

export const auditEntrySchema = z
  .object({
    id: z.string(),
    at: isoDate,
    sub: z.string().nullable(),
    jti: z.string().nullable(),
    role: z.string().nullable(),
    method: z.string(),
    route: z.string().openapi({ example: '/api/v1/file/deploy_from_s3' }),
    params: z.record(z.string(), z.unknown()).openapi({ description: 'Key parameters (robot, object, path, job, token id); never bodies or secrets.' }),
    ip: z.string(),
    status: z.number().int().openapi({ description: 'HTTP status answered; 499 when the client went away first.' }),
    ms: z.number(),
  })
  .openapi('AuditEntry');
export type AuditEntryView = z.infer<typeof auditEntrySchema>;

export const auditPageSchema = z.object({ entries: z.array(auditEntrySchema), next_cursor: z.string().nullable() }).openapi('AuditPage');

/** The robot registry (POST/GET /robots). */
export const addRobotSchema = z
  .object({
    robot_id: z.string(),
    deploy_roots: z.array(z.string()).min(1).openapi({ description: 'Absolute directories the robot may be deployed into.' }),
    state_dir: z.string().optional().openapi({ description: 'Where the daemon keeps its journal on the robot (default /var/lib/fleetsync-ota).' }),
  })
  .openapi('AddRobot');
export const addedRobotSchema = z
  .object({ robot_id: z.string(), deploy_roots: z.array(z.string()), daemon_config: z.string().openapi({ description: "The daemon's config file (its MQTT password: shown once)." }) })
  .openapi('AddedRobot');
export const robotRowSchema = z.object({ robot_id: z.string(), deploy_roots: z.array(z.string()) }).passthrough().openapi('Robot');
