// The OpenAPI document of /api/v1, generated from the same zod schemas that validate requests. Served as
// /api/v1/openapi.json and rendered by Swagger UI at /api/v1/docs (both without authentication). Every
// authenticated operation states the least role it needs (`x-required-role`, and in its description).
import { OpenAPIRegistry, OpenApiGeneratorV3, type RouteConfig } from '@asteasolutions/zod-to-openapi';
import { z } from 'zod';
import type { Role } from '../auth';
import { rolloutBodySchema, rolloutIdParamSchema, rolloutsQuerySchema } from './routes/rollouts';
import {
  addRobotSchema,
  addedRobotSchema,
  robotRowSchema,
  auditPageSchema,
  auditQuerySchema,
  cancelBodySchema,
  cancelResultSchema,
  deployFromS3QuerySchema,
  deployQuerySchema,
  deployTargetRowSchema,
  errorSchema,
  fileDeployListSchema,
  fileInfoListSchema,
  fileUpdateSchema,
  fileDeployResultSchema,
  fileRowSchema,
  fileUploadResultSchema,
  healthSchema,
  jobIdParamSchema,
  jobListSchema,
  jobsQuerySchema,
  jobStateSchema,
  listQuerySchema,
  objectQuerySchema,
  revocationSchema,
  revokeBodySchema,
  robotIdParamSchema,
} from './schemas';

type Method = 'get' | 'post' | 'put' | 'patch' | 'delete';

const json = (schema: z.ZodType, description: string) => ({ description, content: { 'application/json': { schema } } });
const err = (description: string) => json(errorSchema, description);

const multipart = (fields: Record<string, z.ZodType>, description: string) => ({
  description,
  required: true,
  content: { 'multipart/form-data': { schema: z.object(fields) } },
});
const binary = () => z.string().openapi({ type: 'string', format: 'binary' });

export function buildOpenApiDocument(): ReturnType<OpenApiGeneratorV3['generateDocument']> {
  const registry = new OpenAPIRegistry();
  registry.registerComponent('securitySchemes', 'bearerAuth', {
    type: 'http',
    scheme: 'bearer',
    bearerFormat: 'JWT',
    description:
      'HS256 (API_JWT_SECRET, `npm run token`) or EdDSA/RS256/ES256 with keys from API_JWKS. Claims: exp, iat, iss, aud, ' +
      'sub, jti (revocable), role (viewer|operator|admin), optional robots. Lifetime at most API_TOKEN_MAX_TTL.',
  });
  // The JSON carried inside the multipart form fields, documented as schemas of their own.
  registry.register('FileInfoList', fileInfoListSchema);
  registry.register('FileDeployInfoList', fileDeployListSchema);
  registry.register('FileUpdate', fileUpdateSchema);
  const common = {
    401: err('Missing, invalid, expired, revoked or too long-lived bearer token.'),
    422: err('A parameter is missing or malformed.'),
    429: err('Rate limit of this token exceeded (API_RATE_LIMIT per API_RATE_LIMIT_WINDOW); see Retry-After.'),
  };
  const tooLarge = { 413: err('A file or the request is larger than API_UPLOAD_MAX_FILE_BYTES / API_UPLOAD_MAX_REQUEST_BYTES, or too many files; nothing was stored.') };
  const route = (method: Method, path: string, tag: string, role: Role, summary: string, rest: Pick<RouteConfig, 'request' | 'responses'>) =>
    registry.registerPath({
      method,
      path,
      tags: [tag],
      summary,
      description: `Requires the **${role}** role (or higher: viewer < operator < admin).`,
      'x-required-role': role,
      request: rest.request,
      responses: { ...common, 403: err(`The token lacks the "${role}" role${method === 'get' ? '' : ', or the robot is outside its robot scope'}.`), ...rest.responses },
    });

  route('post', '/file/upload', 'Files', 'operator', 'Upload files to S3 and record their metadata', {
    request: {
      body: multipart(
        {
          file_info_list: z.string().openapi({ description: 'JSON string of FileInfoList ({"file_list": [FileInfo, ...]}); must precede the files.', example: '{"file_list":[{"s3_bucket":"files","robot_id":"robot01"}]}' }),
          files: z.array(binary()),
        },
        'One file part per file_list entry, in order.',
      ),
    },
    responses: { ...tooLarge, 200: json(z.array(fileUploadResultSchema), 'Every file stored.'), 400: err('Count mismatch, bad name, path or bucket, name taken; nothing was stored.') },
  });
  route('get', '/file/list', 'Files', 'viewer', 'List files, newest first', {
    request: { query: listQuerySchema },
    responses: { 200: json(z.array(fileRowSchema), 'Matching files.'), 400: err('file_metadata is not a JSON object of strings, or s3_bucket is not an OTA bucket.') },
  });
  route('post', '/file/deploy', 'Deploy', 'operator', 'Upload files and deploy each to a robot', {
    request: {
      query: deployQuerySchema,
      body: multipart(
        {
          file_info_list: z.string().openapi({ description: 'JSON string of FileDeployInfoList (robot_id and deploy_path required); must precede the files.', example: '{"file_list":[{"s3_bucket":"files","robot_id":"robot01","deploy_path":"/tmp/test.txt"}]}' }),
          files: z.array(binary()),
          timeout_s: z.string().optional().openapi({ description: 'Optional job timeout in seconds.' }),
        },
        'One file part per file_list entry, in order.',
      ),
    },
    responses: {
      ...tooLarge,
      200: json(z.array(fileDeployResultSchema), 'Files stored, one PENDING job each.'),
      400: err('Count mismatch, missing/invalid robot_id, deploy_path or s3_bucket; nothing was stored.'),
      503: err('Temporal unavailable: the listed jobs are FAILED.'),
    },
  });
  route('post', '/file/deploy_from_s3', 'Deploy', 'operator', 'Deploy an uploaded file to a robot', {
    request: { query: deployFromS3QuerySchema },
    responses: {
      200: json(fileDeployResultSchema, 'A PENDING job.'),
      400: err('Missing/invalid robot_id, deploy_path or s3_bucket.'),
      404: err('File not found.'),
      409: err('File is invalidated.'),
      503: err('Temporal unavailable: the job is FAILED.'),
    },
  });
  route('get', '/file/download', 'Files', 'viewer', 'Download a file (supports Range)', {
    request: { query: objectQuerySchema },
    responses: {
      200: { description: 'The file.', content: { 'application/octet-stream': { schema: binary() } } },
      206: { description: 'The requested range.', content: { 'application/octet-stream': { schema: binary() } } },
      400: err('s3_bucket is not an OTA bucket.'),
      404: err('File not found.'),
      416: err('Range not satisfiable.'),
    },
  });
  route('patch', '/file/update', 'Files', 'operator', "Update a file's attributes and optionally its content", {
    request: {
      body: multipart(
        {
          file_info: z.string().openapi({ description: 'JSON string of FileUpdate (s3_object_name required); must precede the file.', example: '{"s3_bucket":"files","s3_object_name":"test.txt_<uuid>","robot_id":"robot02"}' }),
          file: binary().optional(),
        },
        'Attributes to change and optional new content.',
      ),
    },
    responses: { ...tooLarge, 200: json(fileRowSchema, 'The updated file.'), 400: err('The file does not exist, or s3_bucket is not an OTA bucket.'), 502: err('Storage unavailable; nothing changed.') },
  });
  route('delete', '/file/delete', 'Files', 'admin', 'Delete a file from S3 and the catalogue', {
    request: { query: objectQuerySchema },
    responses: { 200: json(z.null(), 'Deleted.'), 400: err('s3_bucket is not an OTA bucket.'), 404: err('File not found.'), 502: err('Storage error; the file record is kept.') },
  });
  route('put', '/file/validate', 'Files', 'operator', 'Mark a file valid (deployable)', {
    request: { query: objectQuerySchema },
    responses: { 200: json(fileRowSchema, 'The file.'), 400: err('s3_bucket is not an OTA bucket.'), 404: err('File not found.') },
  });
  route('put', '/file/invalidate', 'Files', 'operator', 'Mark a file invalid (deploy_from_s3 refuses it)', {
    request: { query: objectQuerySchema },
    responses: { 200: json(fileRowSchema, 'The file.'), 400: err('s3_bucket is not an OTA bucket.'), 404: err('File not found.') },
  });
  route('get', '/job_state/{job_id}', 'Jobs', 'viewer', 'State of a deployment job', {
    request: { params: jobIdParamSchema },
    responses: { 200: json(jobStateSchema, 'The job.'), 404: err('Job not found.') },
  });
  route('get', '/jobs', 'Jobs', 'viewer', 'Deployment jobs, newest first, paginated', {
    request: { query: jobsQuerySchema },
    responses: { 200: json(jobListSchema, 'A page of jobs.'), 400: err('Invalid cursor.') },
  });
  route('post', '/job/{job_id}/cancel', 'Jobs', 'operator', 'Cancel a job that is not terminal', {
    request: { params: jobIdParamSchema, body: { required: false, content: { 'application/json': { schema: cancelBodySchema } } } },
    responses: {
      200: json(cancelResultSchema, 'A PENDING job without a running workflow: CANCELED at once in the database.'),
      202: json(cancelResultSchema, 'Cancel requested: the job\'s workflow ends it CANCELED.'),
      404: err('Job not found.'),
      409: err('Job already terminal, or past PENDING with no running workflow.'),
      422: err('Invalid body (e.g. reason not a string of at most 500 characters).'),
      503: err('Temporal unavailable; the job was not canceled.'),
    },
  });
  route('get', '/deploy_state/{robot_id}', 'Debugging', 'viewer', 'What the cloud believes is deployed on a robot', {
    request: { params: robotIdParamSchema },
    responses: { 200: json(z.array(deployTargetRowSchema), 'Deploy targets.') },
  });
  route('post', '/tokens/revoke', 'Security', 'admin', 'Revoke a token by its id (jti): 401 from then on', {
    request: { body: { required: true, content: { 'application/json': { schema: revokeBodySchema } } } },
    responses: { 200: json(revocationSchema, 'Revoked (again: the first revocation is kept).') },
  });
  route('get', '/audit', 'Security', 'admin', 'Audit trail of mutating requests, newest first, paginated', {
    request: { query: auditQuerySchema },
    responses: { 200: json(auditPageSchema, 'A page of entries.'), 400: err('Invalid cursor.') },
  });
  const rolloutView = z.object({ rollout_id: z.string(), status: z.string(), paused: z.boolean(), current_wave: z.number() }).passthrough().openapi('Rollout');
  route('post', '/rollouts', 'Rollouts', 'operator', 'Roll a file out to many robots: waves, success threshold, concurrency cap, abort threshold, deadline', {
    request: { body: { required: true, content: { 'application/json': { schema: rolloutBodySchema } } } },
    responses: { 201: json(rolloutView, 'Created; its otaRollout workflow runs.'), 400: err('Invalid option or target (names the field).'), 404: err('File not found.') },
  });
  route('get', '/rollouts', 'Rollouts', 'viewer', 'Rollouts, newest first, paginated', {
    request: { query: rolloutsQuerySchema },
    responses: { 200: json(z.object({ rollouts: z.array(rolloutView), next_cursor: z.string().nullable() }), 'A page of rollouts.') },
  });
  route('get', '/rollouts/{rollout_id}', 'Rollouts', 'viewer', 'A rollout with its counts per status and per wave', {
    request: { params: rolloutIdParamSchema },
    responses: { 200: json(rolloutView, 'The rollout.'), 404: err('Rollout not found.') },
  });
  for (const action of ['pause', 'resume', 'cancel'] as const) {
    route('post', `/rollouts/{rollout_id}/${action}`, 'Rollouts', 'operator', `${action[0].toUpperCase()}${action.slice(1)} a rollout`, {
      request: { params: rolloutIdParamSchema },
      responses: { 202: json(z.object({ rollout_id: z.string(), action: z.string(), accepted: z.literal(true) }), 'Accepted.'), 409: err('Rollout already finished.') },
    });
  }
  route('get', '/robots', 'Robots', 'admin', 'The robot registry: provisioned robots and their deploy roots', {
    responses: { 200: json(z.array(robotRowSchema), 'Provisioned robots.') },
  });
  route('post', '/robots', 'Robots', 'admin', "Provision a robot: its MQTT credential, deploy roots, and its daemon's config (answered once)", {
    request: { body: { required: true, content: { 'application/json': { schema: addRobotSchema } } } },
    responses: { 201: json(addedRobotSchema, 'Provisioned.'), 400: err('Invalid robot id, roots or state_dir (names the field), or already provisioned.') },
  });
  route('delete', '/robots/{robot_id}', 'Robots', 'admin', 'Remove a robot: credential revoked, robot disconnected, registry entry removed', {
    request: { params: robotIdParamSchema },
    responses: { 200: json(z.object({ robot_id: z.string(), removed: z.literal(true) }), 'Removed.'), 404: err('Robot not provisioned.') },
  });
  registry.registerPath({
    method: 'get',
    path: '/health',
    tags: ['Health'],
    summary: 'Service and dependency health (no authentication; answered from a cache of a few seconds)',
    security: [],
    responses: { 200: json(healthSchema, 'All dependencies reachable.'), 503: json(healthSchema, 'A dependency is down.') },
  });

  return new OpenApiGeneratorV3(registry.definitions).generateDocument({
    openapi: '3.0.3',
    info: {
      title: 'OTA File Service',
      version: '1.0.0',
      description:
        'Upload files to S3 and deploy them to robots over MQTT (compatible with nvidia-isaac/ota-file-service). ' +
        'Every endpoint except /health and the docs needs `Authorization: Bearer <JWT>` whose `role` claim is viewer, ' +
        'operator or admin (each includes the ones before it; the least role of an operation is in `x-required-role`). ' +
        'An optional `robots` claim (robot id patterns, `*` wildcard) limits where the token may deploy.',
    },
    servers: [{ url: '/api/v1' }],
    security: [{ bearerAuth: [] }],
  });
}
