// The OTA app on an ephemeral port against the real stack (FerretDB, versitygw, Temporal from global-setup):
// its own database, and a task queue no worker polls, so started workflows stay put and can be inspected
// and terminated. Also small HTTP helpers for multipart requests.
import { DeleteObjectCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { Connection, WorkflowClient } from '@temporalio/client';
import crypto from 'node:crypto';
import type http from 'node:http';
import { createS3Client } from '../../activities/s3/client';
import { sharedSecretSettings, signToken, type Role, type TokenOptions } from '../../api/auth';
import { createOtaApp } from '../../api/ota/app';
import type { OtaAppDeps, OtaAppOptions } from '../../api/ota/types';
import { closeServer, listen, serverPort } from '../../api/server';
import type { Config } from '../../common/config';
import { connectDb, type Db } from '../../common/db';
import { createLogger, type Logger } from '../../common/logger';
import { recordRobots } from '../../infra/robots';
import { cfg as baseCfg, uniqueId } from '../helpers';

/** Robot ids the API tests deploy to (a deploy to a robot outside the registry is refused). */
export const HARNESS_ROBOTS = ['robot01', 'robot02', 'robot03', 'lr1', 'lr2', 'robot-ds', 'x', 'before', 'changed'];

export interface Harness {
  cfg: Config;
  db: Db;
  s3: S3Client;
  temporal: WorkflowClient;
  server: http.Server;
  /** http://127.0.0.1:<port>/api/v1 */
  base: string;
  /** An admin token (every endpoint); tokenFor mints others. */
  token: string;
  auth: { authorization: string };
  /** A token with this role (null: no role claim), signed like `npm run token`. */
  tokenFor(role: Role | null, o?: Partial<TokenOptions>): Promise<string>;
  /** What the app was built from (tests run the job reconciler with the same dependencies). */
  deps: OtaAppDeps;
  close(): Promise<void>;
}

export interface HarnessOptions {
  options?: Partial<OtaAppOptions>;
  /** Temporal namespace the app uses (default: the stack's). */
  namespace?: string;
  log?: Logger;
  /** Overrides of the S3 settings the app uses (e.g. a wrong secret to simulate a failing store). */
  s3?: Partial<Config['s3']>;
  /** Buckets the OTA API accepts (default: the app's default). */
  otaBuckets?: string[];
  /** Overrides of the API settings (rate limit, upload limits, JWKS, maximum token lifetime...). */
  api?: Partial<Config['api']>;
}

export async function startHarness(o: HarnessOptions = {}): Promise<Harness> {
  const cfg: Config = {
    ...baseCfg,
    temporal: { ...baseCfg.temporal, taskQueue: uniqueId('api-test-nobody-polls') },
    api: { ...baseCfg.api, ...o.api },
  };
  const db = await connectDb(cfg, `ota_api_test_${crypto.randomBytes(4).toString('hex')}`);
  // The robots these tests deploy to, provisioned in this database's registry with the roots their paths use.
  await recordRobots(db.models, HARNESS_ROBOTS.map((id) => ({ id, roots: ['/tmp', '/opt/app'] })));
  const s3 = createS3Client(o.s3 ? { ...cfg, s3: { ...cfg.s3, ...o.s3 } } : cfg);
  const connection = await Connection.connect({ address: cfg.temporal.address });
  const temporal = new WorkflowClient({ connection, namespace: o.namespace ?? cfg.temporal.namespace });
  const deps: OtaAppDeps = {
    cfg,
    models: db.models,
    s3,
    temporal,
    log: o.log ?? createLogger('api-test', process.env.TEST_LOG_LEVEL ?? 'silent'),
    options: { queryTimeoutMs: 500, ...o.options },
    ...(o.otaBuckets ? { otaBuckets: o.otaBuckets } : {}),
  };
  const app = createOtaApp(deps);
  const server = await listen(app, 0, '127.0.0.1');
  const tokenFor = (role: Role | null, t: Partial<TokenOptions> = {}) =>
    signToken(sharedSecretSettings(cfg.api), { subject: `api-test-${role ?? 'norole'}`, ttl: '1h', ...(role ? { role } : {}), ...t });
  const token = await tokenFor('admin', { subject: 'api-test' });
  return {
    cfg,
    db,
    s3,
    temporal,
    server,
    base: `http://127.0.0.1:${serverPort(server)}/api/v1`,
    token,
    auth: { authorization: `Bearer ${token}` },
    tokenFor,
    deps,
    async close() {
      await closeServer(server, 1000);
      await terminateQueue(temporal, cfg.temporal.taskQueue);
      // The stack is shared: remove the objects this test's files point at before dropping its database.
      const files = await db.models.OtaFile.find({}, { s3_bucket: 1, s3_object_name: 1 }).lean();
      await Promise.all(
        files.map((f) => s3.send(new DeleteObjectCommand({ Bucket: f.s3_bucket, Key: f.s3_object_name })).catch(() => undefined)),
      );
      await db.connection.dropDatabase().catch(() => undefined);
      await db.close();
      await connection.close();
      s3.destroy();
    },
  };
}

/** Terminates every run still open on the test's private task queue. */
export async function terminateQueue(temporal: WorkflowClient, taskQueue: string): Promise<void> {
  try {
    for await (const wf of temporal.list({ query: `TaskQueue = "${taskQueue}" AND ExecutionStatus = "Running"` })) {
      await temporal.getHandle(wf.workflowId, wf.runId).terminate('api test cleanup').catch(() => undefined);
    }
  } catch {
    // Namespace not reachable from this client (tests with a broken client): nothing to clean.
  }
}

/** Keys in a bucket starting with `prefix`; tests name their files uniquely and look only at their own keys. */
export async function listKeys(s3: S3Client, bucket: string, prefix: string): Promise<Set<string>> {
  const keys = new Set<string>();
  let token: string | undefined;
  do {
    const out = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
    for (const o of out.Contents ?? []) if (o.Key) keys.add(o.Key);
    token = out.IsTruncated ? out.NextContinuationToken : undefined;
  } while (token);
  return keys;
}

export interface Part {
  name: string;
  value: string | Buffer;
  filename?: string;
  type?: string;
}

/** A multipart body with parts in exactly the given order (order matters: file_info_list first). */
export function form(parts: readonly Part[]): FormData {
  const fd = new FormData();
  for (const p of parts) {
    if (p.filename !== undefined || Buffer.isBuffer(p.value)) {
      fd.append(p.name, new Blob([p.value], { type: p.type ?? 'application/octet-stream' }), p.filename ?? 'blob');
    } else fd.append(p.name, p.value);
  }
  return fd;
}

export const fileInfoList = (items: object[]): Part => ({ name: 'file_info_list', value: JSON.stringify({ file_list: items }) });
export const filePart = (content: string | Buffer, filename = 'test.txt'): Part => ({
  name: 'files',
  value: Buffer.isBuffer(content) ? content : Buffer.from(content),
  filename,
  type: 'text/plain',
});

export interface JsonResponse<T = unknown> {
  status: number;
  body: T;
  headers: Headers;
}

export async function request<T = unknown>(
  h: Harness,
  method: string,
  path: string,
  init: { body?: FormData | string; headers?: Record<string, string>; auth?: boolean } = {},
): Promise<JsonResponse<T>> {
  const res = await fetch(`${h.base}${path}`, {
    method,
    body: init.body,
    headers: { ...(init.auth === false ? {} : h.auth), ...init.headers },
  });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON (downloads)
  }
  return { status: res.status, body: body as T, headers: res.headers };
}

/** A file name no other test (or concurrent run on the shared stack) uses, so its keys can be found by prefix. */
export const uniqueName = (label: string): string => `${label}-${crypto.randomBytes(5).toString('hex')}.txt`;

export const sha256 = (b: Buffer | string): string => crypto.createHash('sha256').update(b).digest('hex');
