// The one place that reads the environment. Every process (stack scripts, workers, API, bridge, tests) calls
// loadConfig(); production points each part at its real counterpart by setting the variables documented in
// README.md. Local secrets that are not in the environment come from <dataDir>/local.env, which is generated
// once with random values, so no secret is hard-coded and none has to be typed by hand for a local run.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';

export const repoRoot = path.resolve(__dirname, '..');

const port = z.coerce.number().int().min(1).max(65535);
const bool = z
  .enum(['true', 'false', '1', '0', 'yes', 'no'])
  .transform((v) => v === 'true' || v === '1' || v === 'yes');

/** Secrets that a local stack generates when the environment does not provide them. */
const LOCAL_SECRETS = ['S3_ACCESS_KEY_ID', 'S3_SECRET_ACCESS_KEY', 'MQTT_PASSWORD', 'API_JWT_SECRET'] as const;

/** "90s", "15m", "12h", "7d", "500ms": a duration in milliseconds (token lifetimes, rate-limit windows, caches). */
const DURATION_UNITS_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 } as const;
export function parseDurationMs(text: string): number | null {
  const m = /^(\d+)\s*(ms|s|m|h|d|w)$/.exec(text.trim());
  return m ? Number(m[1]) * DURATION_UNITS_MS[m[2] as keyof typeof DURATION_UNITS_MS] : null;
}
const duration = z.string().transform((v, ctx) => {
  const ms = parseDurationMs(v);
  if (ms === null) ctx.addIssue({ code: 'custom', message: `"${v}" is not a duration like 90s, 15m, 12h or 7d` });
  return ms ?? 0;
});

/** "1048576", "512MiB", "5GiB": a size in bytes (upload limits). */
const BYTE_UNITS = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3, TiB: 1024 ** 4 } as const;
const byteSize = z.string().transform((v, ctx) => {
  const m = /^(\d+)\s*(B|KiB|MiB|GiB|TiB)?$/.exec(v.trim());
  if (!m) ctx.addIssue({ code: 'custom', message: `"${v}" is not a size like 1048576, 512MiB or 5GiB` });
  return m ? Number(m[1]) * BYTE_UNITS[(m[2] ?? 'B') as keyof typeof BYTE_UNITS] : 0;
});

/** JWT algorithms the cloud API can verify: HS256 with API_JWT_SECRET, the asymmetric ones with API_JWKS. */
export const JWT_ALGORITHMS = ['HS256', 'EdDSA', 'RS256', 'ES256'] as const;
export type JwtAlgorithm = (typeof JWT_ALGORITHMS)[number];

/** Upper bound of MQTT_BRIDGE_LANES; the bridge also drains lane sessions up to it left by a larger setting. */
export const MQTT_BRIDGE_MAX_LANES = 32;

const envSchema = z.object({
  NODE_ENV: z.enum(['development', 'test', 'production']).default('development'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  FLEET_DATA_DIR: z.string().default(path.join(repoRoot, '.data')),
  FLEET_TOOLS_DIR: z.string().default(path.join(os.homedir(), '.cache', 'fleetsync')),

  TEMPORAL_PORT: port.default(7233),
  TEMPORAL_UI_PORT: port.default(8233),
  TEMPORAL_ADDRESS: z.string().optional(),
  TEMPORAL_NAMESPACE: z.string().min(1).default('fleet'),
  TEMPORAL_TASK_QUEUE: z.string().min(1).default('fleet'),
  // Where operators open Temporal Web (the UIs link every run there); locally the dev server's UI port.
  TEMPORAL_WEB_URL: z.string().url().optional(),
  // Activities in flight per worker. Low by default: FerretDB (SQLite) turns many concurrent status writes into
  // 10 s lock waits, and a write that times out can still land late (see infra/README.md). MongoDB can take more.
  WORKER_MAX_CONCURRENT_ACTIVITIES: z.coerce.number().int().min(1).max(1000).default(8),

  MONGO_PORT: port.default(27017),
  MONGO_URL: z.string().optional(),
  MONGO_DB: z.string().min(1).default('fleet'),
  MONGO_TIMEOUT_MS: z.coerce.number().int().positive().default(10000),

  S3_PORT: port.default(7070),
  S3_ENDPOINT: z.string().url().optional(),
  S3_REGION: z.string().default('us-east-1'),
  S3_ACCESS_KEY_ID: z.string().min(1),
  S3_SECRET_ACCESS_KEY: z.string().min(1),
  S3_FORCE_PATH_STYLE: bool.default(true),
  S3_BUCKETS: z.string().default('files,robot-files'),

  // Robots connect to MQTT_PORT, where the broker forces client id = user name; cloud processes (API, bridge,
  // workers, several at once) connect to the cloud listener, where each picks its own client id.
  MQTT_PORT: port.default(1883),
  MQTT_URL: z.string().optional(),
  MQTT_CLOUD_PORT: port.default(1884),
  MQTT_CLOUD_URL: z.string().optional(),
  MQTT_USERNAME: z.string().min(1).default('cloud'),
  MQTT_PASSWORD: z.string().min(1),
  // The MQTT bridge's persistent-session client id: fixed, so a restarted bridge resumes its queued reports.
  MQTT_BRIDGE_CLIENT_ID: z.string().min(1).default('cloud-bridge'),
  // State-report lanes of the bridge: MQTT connections sharing one subscription, handled in parallel.
  MQTT_BRIDGE_LANES: z.coerce.number().int().min(1).max(MQTT_BRIDGE_MAX_LANES).default(8),

  API_PORT: port.default(9005),
  // Prometheus endpoints of the worker (Temporal SDK runtime metrics) and the MQTT bridge; unset: API_PORT + 1 / + 2
  // (so a port offset moves them too); 0 turns the endpoint off. The API serves /metrics on API_PORT.
  WORKER_METRICS_PORT: z.coerce.number().int().min(0).max(65535).optional(),
  BRIDGE_METRICS_PORT: z.coerce.number().int().min(0).max(65535).optional(),
  // Loopback unless told otherwise: a local run should not expose the API to the LAN (production sets 0.0.0.0).
  API_HOST: z.string().min(1).optional(),
  API_PUBLIC_URL: z.string().url().optional(),
  API_JWT_SECRET: z.string().min(16),
  API_JWT_ISSUER: z.string().default('fleetsync'),
  API_JWT_AUDIENCE: z.string().default('fleetsync-api'),
  // Operator tokens: the algorithms accepted (HS256 uses API_JWT_SECRET; the others need API_JWKS, a JWKS file or
  // https URL of an identity provider), the longest lifetime a token may have (exp - iat), and how stale the
  // in-process list of revoked token ids may be on an API that did not do the revoking.
  API_JWT_ALGORITHMS: z
    .string()
    .default('HS256,EdDSA,RS256')
    .transform((v) => v.split(',').map((a) => a.trim()).filter(Boolean))
    .pipe(z.array(z.enum(JWT_ALGORITHMS)).min(1)),
  API_JWKS: z.string().min(1).optional(),
  API_TOKEN_MAX_TTL: duration.prefault('24h'),
  API_REVOCATION_REFRESH: duration.prefault('5s'),
  // Abuse limits: requests per token per window (0 = off), upload sizes (413 beyond, nothing stored), and which
  // proxies to trust for the client address in the audit trail (Express "trust proxy": false, a hop count, or
  // comma-separated addresses/subnets such as "loopback,10.0.0.0/8").
  API_RATE_LIMIT: z.coerce.number().int().min(0).default(1200),
  API_RATE_LIMIT_WINDOW: duration.prefault('1m'),
  API_UPLOAD_MAX_FILE_BYTES: byteSize.prefault('5GiB'),
  API_UPLOAD_MAX_REQUEST_BYTES: byteSize.prefault('20GiB'),
  API_TRUST_PROXY: z.string().default('false'),

  // Deploy-signing keys (common/signing-keys.ts): a JSON array; locally generated into <dataDir>/signing-keys.json.
  OTA_SIGNING_KEYS: z.string().min(1).optional(),
  // Group commit of single deploys (api/ota/deploy-batcher.ts): deploys arriving within the window (or until the
  // batch is full) are stored with one insert and driven by one batch workflow. false: one workflow per job.
  OTA_DEPLOY_BATCH: bool.default(true),
  OTA_DEPLOY_BATCH_WINDOW: duration.prefault('20ms'),
  OTA_DEPLOY_BATCH_MAX_JOBS: z.coerce.number().int().min(1).max(50).default(50),
  // Job reconciler (api/ota/reconciler.ts): how long a request is given to hand its jobs to Temporal itself.
  OTA_RECONCILE_GRACE: duration.prefault('30s'),

  FLEET_ROBOTS: z.coerce.number().int().min(0).max(1000).default(3),
  FLEET_SSH_BASE_PORT: port.default(2201),

  // The offline app (a center's computer): its own API, database, Temporal namespace and worker.
  CENTER_ID: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'letters, digits, _ and - only').default('center01'),
  OFFLINE_API_PORT: port.default(8080),
  OFFLINE_API_HOST: z.string().min(1).optional(),
  OFFLINE_MONGO_DB: z.string().min(1).default('center'),
  OFFLINE_TEMPORAL_ADDRESS: z.string().optional(),
  // The center's Temporal Web, linked from the specialist UI (locally the shared dev server's).
  OFFLINE_TEMPORAL_WEB_URL: z.string().url().optional(),
  OFFLINE_TEMPORAL_NAMESPACE: z.string().min(1).default('center'),
  OFFLINE_TASK_QUEUE: z.string().min(1).default('center'),
  CLOUD_API_URL: z.string().url().optional(),
  // The center's JWT for the cloud (secret). Locally the seeding writes it into <dataDir>/local.env.
  CENTER_JWT: z.string().min(1).optional(),
  RF_CACHE_DIR: z.string().optional(),
  // Robot sync: RFs of at least ROBOT_SYNC_OPENSSH_FROM_BYTES go through the system's OpenSSH `ssh` client (a
  // child process into dd on the robot, aes128-gcm) instead of ssh2: less than half the CPU per byte (client +
  // robot, bench robot-sync).
  ROBOT_SYNC_OPENSSH: bool.default(true),
  ROBOT_SYNC_OPENSSH_FROM_BYTES: z.coerce.number().int().positive().default(64 * 1024 * 1024),
  // Parallel ssh streams per large RF, each on its own byte range of the part (openssh-put.ts).
  ROBOT_SYNC_OPENSSH_STREAMS: z.coerce.number().int().min(1).max(8).default(2),
});

export type Env = z.infer<typeof envSchema>;

export interface Config {
  env: Env['NODE_ENV'];
  logLevel: Env['LOG_LEVEL'];
  dataDir: string;
  toolsDir: string;
  temporal: { address: string; port: number; uiPort: number; webUrl: string; namespace: string; taskQueue: string; maxConcurrentActivities: number };
  mongo: { url: string; port: number; db: string; timeoutMs: number };
  s3: {
    endpoint: string;
    port: number;
    region: string;
    accessKeyId: string;
    secretAccessKey: string;
    forcePathStyle: boolean;
    buckets: string[];
  };
  mqtt: {
    url: string;
    port: number;
    cloudUrl: string;
    cloudPort: number;
    username: string;
    password: string;
    bridgeClientId: string;
    bridgeLanes: number;
  };
  api: {
    host: string;
    port: number;
    publicUrl: string;
    jwtSecret: string;
    jwtIssuer: string;
    jwtAudience: string;
    jwtAlgorithms: JwtAlgorithm[];
    /** JWKS file path or http(s) URL with the public keys of EdDSA/RS256/ES256 tokens. */
    jwks: string | null;
    tokenMaxTtlMs: number;
    revocationRefreshMs: number;
    /** Requests per token per rateLimitWindowMs; 0 turns the limit off. */
    rateLimit: number;
    rateLimitWindowMs: number;
    uploadMaxFileBytes: number;
    uploadMaxRequestBytes: number;
    trustProxy: boolean | number | string;
  };
  fleet: { robots: number; sshBasePort: number; dir: string };
  ota: { signingKeys: string | undefined };
  otaDeployBatch: { enabled: boolean; windowMs: number; maxJobs: number; reconcileGraceMs: number };
  /** Prometheus endpoints (127.0.0.1 locally, all interfaces in production); 0: off. */
  metrics: { host: string; workerPort: number; bridgePort: number };
  offline: {
    centerId: string;
    api: { host: string; port: number };
    mongoDb: string;
    temporal: { address: string; webUrl: string; namespace: string; taskQueue: string };
    cloudApiUrl: string;
    /** null until the center is installed (locally: until the seeding wrote it); production requires it. */
    centerJwt: string | null;
    rfCacheDir: string;
    /** RFs at least `fromBytes` large go through OpenSSH `ssh` + `dd` when `enabled`, as `streams` parallel byte ranges (activities/ssh/openssh-put.ts). */
    robotSyncOpenssh: { enabled: boolean; fromBytes: number; streams: number };
  };
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

function readEnvFile(file: string): Record<string, string> {
  if (!fs.existsSync(file)) return {};
  const out: Record<string, string> = {};
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (m) out[m[1]] = m[2];
  }
  return out;
}

/** Creates <dataDir>/local.env with random secrets once; concurrent callers agree on the first file written. */
function ensureLocalSecrets(dataDir: string): Record<string, string> {
  const file = path.join(dataDir, 'local.env');
  if (!fs.existsSync(file)) {
    fs.mkdirSync(dataDir, { recursive: true });
    const body = LOCAL_SECRETS.map((k) => `${k}=${crypto.randomBytes(18).toString('base64url')}`).join('\n') + '\n';
    const tmp = `${file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, body, { mode: 0o600 });
    try {
      fs.linkSync(tmp, file); // atomic create-if-absent
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    } finally {
      fs.unlinkSync(tmp);
    }
  }
  return readEnvFile(file);
}

export function loadConfig(source: NodeJS.ProcessEnv = process.env): Config {
  const isProduction = source.NODE_ENV === 'production';
  const dataDir = path.resolve(source.FLEET_DATA_DIR ?? path.join(repoRoot, '.data'));
  const merged: Record<string, string | undefined> = { ...source };
  // Production never falls back to generated secrets: a missing one must fail loudly, naming the variable.
  if (!isProduction && LOCAL_SECRETS.some((k) => !source[k])) {
    const local = ensureLocalSecrets(dataDir);
    for (const k of LOCAL_SECRETS) merged[k] ??= local[k];
  }
  // The center's JWT is issued by the cloud's seeding, not generated here: taken from local.env when present.
  if (!isProduction && !source.CENTER_JWT) merged.CENTER_JWT ??= readEnvFile(path.join(dataDir, 'local.env')).CENTER_JWT;
  const parsed = envSchema.safeParse(merged);
  if (!parsed.success) {
    const detail = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
    throw new ConfigError(`invalid configuration: ${detail}`);
  }
  const e = parsed.data;
  const temporalAddress = e.TEMPORAL_ADDRESS ?? `127.0.0.1:${e.TEMPORAL_PORT}`;
  const apiPublicUrl = e.API_PUBLIC_URL ?? `http://127.0.0.1:${e.API_PORT}`;
  return {
    env: e.NODE_ENV,
    logLevel: e.LOG_LEVEL,
    dataDir,
    toolsDir: e.FLEET_TOOLS_DIR,
    temporal: {
      address: temporalAddress,
      port: e.TEMPORAL_PORT,
      uiPort: e.TEMPORAL_UI_PORT,
      webUrl: e.TEMPORAL_WEB_URL ?? `http://127.0.0.1:${e.TEMPORAL_UI_PORT}`,
      namespace: e.TEMPORAL_NAMESPACE,
      taskQueue: e.TEMPORAL_TASK_QUEUE,
      maxConcurrentActivities: e.WORKER_MAX_CONCURRENT_ACTIVITIES,
    },
    mongo: {
      url: e.MONGO_URL ?? `mongodb://127.0.0.1:${e.MONGO_PORT}/`,
      port: e.MONGO_PORT,
      db: e.MONGO_DB,
      timeoutMs: e.MONGO_TIMEOUT_MS,
    },
    s3: {
      endpoint: e.S3_ENDPOINT ?? `http://127.0.0.1:${e.S3_PORT}`,
      port: e.S3_PORT,
      region: e.S3_REGION,
      accessKeyId: e.S3_ACCESS_KEY_ID,
      secretAccessKey: e.S3_SECRET_ACCESS_KEY,
      forcePathStyle: e.S3_FORCE_PATH_STYLE,
      buckets: e.S3_BUCKETS.split(',').map((b) => b.trim()).filter(Boolean),
    },
    mqtt: {
      url: e.MQTT_URL ?? `mqtt://127.0.0.1:${e.MQTT_PORT}`,
      port: e.MQTT_PORT,
      cloudUrl: e.MQTT_CLOUD_URL ?? `mqtt://127.0.0.1:${e.MQTT_CLOUD_PORT}`,
      cloudPort: e.MQTT_CLOUD_PORT,
      username: e.MQTT_USERNAME,
      password: e.MQTT_PASSWORD,
      bridgeClientId: e.MQTT_BRIDGE_CLIENT_ID,
      bridgeLanes: e.MQTT_BRIDGE_LANES,
    },
    api: {
      host: e.API_HOST ?? (e.NODE_ENV === 'production' ? '0.0.0.0' : '127.0.0.1'),
      port: e.API_PORT,
      publicUrl: apiPublicUrl,
      jwtSecret: e.API_JWT_SECRET,
      jwtIssuer: e.API_JWT_ISSUER,
      jwtAudience: e.API_JWT_AUDIENCE,
      jwtAlgorithms: e.API_JWT_ALGORITHMS,
      jwks: e.API_JWKS ?? null,
      tokenMaxTtlMs: e.API_TOKEN_MAX_TTL,
      revocationRefreshMs: e.API_REVOCATION_REFRESH,
      rateLimit: e.API_RATE_LIMIT,
      rateLimitWindowMs: e.API_RATE_LIMIT_WINDOW,
      uploadMaxFileBytes: e.API_UPLOAD_MAX_FILE_BYTES,
      uploadMaxRequestBytes: e.API_UPLOAD_MAX_REQUEST_BYTES,
      trustProxy: /^(true|false)$/.test(e.API_TRUST_PROXY) ? e.API_TRUST_PROXY === 'true' : /^\d+$/.test(e.API_TRUST_PROXY) ? Number(e.API_TRUST_PROXY) : e.API_TRUST_PROXY,
    },
    fleet: { robots: e.FLEET_ROBOTS, sshBasePort: e.FLEET_SSH_BASE_PORT, dir: path.join(dataDir, 'fleet') },
    ota: { signingKeys: e.OTA_SIGNING_KEYS },
    otaDeployBatch: { enabled: e.OTA_DEPLOY_BATCH, windowMs: e.OTA_DEPLOY_BATCH_WINDOW, maxJobs: e.OTA_DEPLOY_BATCH_MAX_JOBS, reconcileGraceMs: e.OTA_RECONCILE_GRACE },
    metrics: {
      host: e.NODE_ENV === 'production' ? '0.0.0.0' : '127.0.0.1',
      workerPort: e.WORKER_METRICS_PORT ?? e.API_PORT + 1,
      bridgePort: e.BRIDGE_METRICS_PORT ?? e.API_PORT + 2,
    },
    offline: {
      centerId: e.CENTER_ID,
      api: { host: e.OFFLINE_API_HOST ?? (e.NODE_ENV === 'production' ? '0.0.0.0' : '127.0.0.1'), port: e.OFFLINE_API_PORT },
      mongoDb: e.OFFLINE_MONGO_DB,
      temporal: {
        address: e.OFFLINE_TEMPORAL_ADDRESS ?? temporalAddress,
        webUrl: e.OFFLINE_TEMPORAL_WEB_URL ?? e.TEMPORAL_WEB_URL ?? `http://127.0.0.1:${e.TEMPORAL_UI_PORT}`,
        namespace: e.OFFLINE_TEMPORAL_NAMESPACE,
        taskQueue: e.OFFLINE_TASK_QUEUE,
      },
      cloudApiUrl: (e.CLOUD_API_URL ?? apiPublicUrl).replace(/\/+$/, ''),
      centerJwt: e.CENTER_JWT ?? null,
      rfCacheDir: path.resolve(e.RF_CACHE_DIR ?? path.join(dataDir, 'center', 'rf-cache')),
      robotSyncOpenssh: { enabled: e.ROBOT_SYNC_OPENSSH, fromBytes: e.ROBOT_SYNC_OPENSSH_FROM_BYTES, streams: e.ROBOT_SYNC_OPENSSH_STREAMS },
    },
  };
}

/** The offline worker's start check: a production center without its JWT fails loudly, naming the variable. */
export function assertOfflineConfig(cfg: Config): void {
  if (cfg.env === 'production' && !cfg.offline.centerJwt) {
    throw new ConfigError('invalid configuration: CENTER_JWT: required for the offline app in production');
  }
}
