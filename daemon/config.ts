// The daemon's configuration: a flat YAML file (the reference daemon's keys plus ours), then environment
// overrides, validated by zod. Unlike the reference, an invalid config is an error the caller must turn into a
// non-zero exit, so `Restart=on-failure` and operators notice it.
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { z } from 'zod';
import { robotIdSchema } from '../common/protocol';
import { parsePublicKeys } from '../common/signing';

export interface DaemonConfig {
  robotId: string;
  mqtt: {
    /** Full broker URL built from host / mqtt_port / transport, e.g. `mqtt://10.0.0.5:1883`. */
    url: string;
    username: string;
    password: string;
    caFile?: string;
    sessionExpirySeconds: number;
  };
  /** Only for reference-shaped deploy messages that carry no presigned `url`. */
  s3: {
    region: string;
    endpoint?: string;
    accessKeyId?: string;
    secretAccessKey?: string;
  };
  /** Accepted for reference compatibility; the daemon has no upload API (see README), so it is unused. */
  cloudServiceUrl?: string;
  allowedRoots: string[];
  stateDir: string;
  reportIntervalMs: number;
  maxConcurrentJobs: number;
  /** Per-download bandwidth cap; undefined = unlimited. */
  maxDownloadBytesPerSecond?: number;
  /** The cloud's deploy-signing public keys, `<key id>:<base64 SPKI>`; empty = drop-in mode (unsigned accepted). */
  signingPublicKeys: string[];
}

export class DaemonConfigError extends Error {
  override name = 'DaemonConfigError';
}

/**
 * Environment variable → YAML key. An env var that exists overrides the key, as in the reference daemon. The
 * reference daemon's names are kept as they are; ours start with `OTA_`, so that a variable of the cloud's own
 * config (common/config.ts: MQTT_USERNAME / MQTT_PASSWORD are the cloud's broker login) exported in the same
 * shell never becomes the robot's.
 */
export const ENV_OVERRIDES: Readonly<Record<string, string>> = {
  ROBOT_ID: 'robot_id',
  MQTT_HOST: 'host',
  MQTT_PORT: 'mqtt_port',
  OTA_MQTT_USERNAME: 'mqtt_username',
  OTA_MQTT_PASSWORD: 'mqtt_password',
  S3_ENDPOINT_URL: 'endpoint_url',
  S3_ID: 'aws_access_key_id',
  S3_ACCESS_KEY: 'aws_secret_access_key',
  CLOUD_SERVICE_URL: 'cloud_service_url',
  OTA_ALLOWED_ROOTS: 'allowed_roots',
  OTA_STATE_DIR: 'state_dir',
};

/** Reference keys we accept but do not need; listed so they do not trigger the unknown-key warning. */
const IGNORED_KEYS = ['topic_pattern'] as const;

// Env values arrive as strings: numeric keys accept digit strings; anything else is left for zod to reject.
const num = (inner: z.ZodNumber) =>
  z.preprocess((v) => (typeof v === 'string' && /^\s*\d+(\.\d+)?\s*$/.test(v) ? Number(v) : v), inner);
// An empty optional value (e.g. `S3_ENDPOINT_URL=` in a .env file) means "not set" rather than "invalid".
const optionalText = (inner: z.ZodString = z.string()) =>
  z.preprocess((v) => (v === '' || v === null ? undefined : v), inner.optional());
const absolutePath = z
  .string()
  .min(1)
  .refine((p) => path.isAbsolute(p), { message: 'must be an absolute path' });

const fileSchema = z.object({
  robot_id: robotIdSchema,
  host: z.string().min(1).default('localhost'),
  mqtt_port: num(z.number().int().min(1).max(65535)).optional(),
  /** The reference's name for the MQTT port; `mqtt_port` wins when both are set. */
  port: num(z.number().int().min(1).max(65535)).optional(),
  transport: z.enum(['tcp', 'websockets']).default('tcp'),
  ws_path: optionalText(),
  mqtt_tls: z.boolean().default(false),
  mqtt_ca_file: optionalText(absolutePath),
  mqtt_username: optionalText(z.string().min(1)),
  mqtt_password: optionalText(z.string().min(1)),
  mqtt_password_file: optionalText(absolutePath),
  region_name: z.string().min(1).default('us-east-1'),
  endpoint_url: optionalText(z.string().url()),
  aws_access_key_id: optionalText(),
  aws_secret_access_key: optionalText(),
  cloud_service_url: optionalText(),
  allowed_roots: z.array(absolutePath).min(1, 'must list at least one absolute directory'),
  state_dir: absolutePath,
  report_interval_s: num(z.number().positive().max(86400)).default(30),
  session_expiry_s: num(z.number().int().min(0).max(0xffffffff)).default(604800),
  max_concurrent_jobs: num(z.number().int().min(1).max(64)).default(2),
  max_download_bytes_per_s: num(z.number().int().min(1024)).optional(),
  signing_public_keys: z.array(z.string().min(1)).default([]),
});
type FileConfig = z.infer<typeof fileSchema>;
const KNOWN_KEYS = new Set<string>([...Object.keys(fileSchema.shape), ...IGNORED_KEYS]);

export interface LoadResult {
  config: DaemonConfig;
  /** Unknown YAML keys: warned about rather than rejected, as the reference ignored extras. */
  unknownKeys: string[];
}

function readYaml(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new DaemonConfigError(`cannot read config file ${file}: ${(e as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = YAML.parse(text);
  } catch (e) {
    // Only the first line: the parser's message goes on with an excerpt of the file, which may be a secret.
    throw new DaemonConfigError(`config file ${file} is not valid YAML: ${(e as Error).message.split('\n')[0]}`);
  }
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== 'object' || Array.isArray(doc)) {
    throw new DaemonConfigError(`config file ${file} must be a YAML mapping of keys to values`);
  }
  return doc as Record<string, unknown>;
}

function applyEnv(raw: Record<string, unknown>, env: NodeJS.ProcessEnv): { merged: Record<string, unknown>; fromEnv: Map<string, string> } {
  const merged: Record<string, unknown> = { ...raw };
  const fromEnv = new Map<string, string>();
  for (const [name, key] of Object.entries(ENV_OVERRIDES)) {
    const value = env[name];
    if (value === undefined) continue;
    merged[key] = key === 'allowed_roots' ? value.split(':').filter((p) => p !== '') : value;
    fromEnv.set(key, name);
  }
  return { merged, fromEnv };
}

function describeIssues(error: z.ZodError, fromEnv: Map<string, string>): string {
  return error.issues
    .map((issue) => {
      const key = String(issue.path[0] ?? '(root)');
      const where = issue.path.length > 1 ? `${key}[${issue.path.slice(1).join('.')}]` : key;
      const env = fromEnv.get(key);
      const missing = issue.code === 'invalid_type' && issue.message.endsWith('received undefined');
      const message = missing ? 'is required' : issue.message;
      return `${where}${env ? ` (from ${env})` : ''}: ${message}`;
    })
    .join('; ');
}

function resolvePassword(c: FileConfig): string {
  if (c.mqtt_password !== undefined) return c.mqtt_password;
  if (c.mqtt_password_file !== undefined) {
    let secret: string;
    try {
      secret = fs.readFileSync(c.mqtt_password_file, 'utf8').trim();
    } catch (e) {
      throw new DaemonConfigError(`mqtt_password_file: cannot read ${c.mqtt_password_file}: ${(e as NodeJS.ErrnoException).code ?? 'error'}`);
    }
    if (secret === '') throw new DaemonConfigError(`mqtt_password_file: ${c.mqtt_password_file} is empty`);
    return secret;
  }
  throw new DaemonConfigError('mqtt_password: is required (or set mqtt_password_file)');
}

function brokerUrl(c: FileConfig): string {
  const port = c.mqtt_port ?? c.port ?? 1883;
  const scheme = c.transport === 'websockets' ? (c.mqtt_tls ? 'wss' : 'ws') : c.mqtt_tls ? 'mqtts' : 'mqtt';
  // Bracket IPv6 literals so the URL parses.
  const host = c.host.includes(':') && !c.host.startsWith('[') ? `[${c.host}]` : c.host;
  const wsPath = c.transport === 'websockets' ? `/${(c.ws_path ?? 'mqtt').replace(/^\/+/, '')}` : '';
  return `${scheme}://${host}:${port}${wsPath}`;
}

/** Parses and validates a config object (YAML already read). Throws DaemonConfigError naming the bad key. */
export function parseDaemonConfig(raw: Record<string, unknown>, env: NodeJS.ProcessEnv = {}): LoadResult {
  const { merged, fromEnv } = applyEnv(raw, env);
  const parsed = fileSchema.safeParse(merged);
  if (!parsed.success) throw new DaemonConfigError(`invalid config: ${describeIssues(parsed.error, fromEnv)}`);
  const c = parsed.data;
  if (c.mqtt_tls === false && c.mqtt_ca_file !== undefined) {
    throw new DaemonConfigError('mqtt_ca_file: only valid with mqtt_tls: true');
  }
  try {
    parsePublicKeys(c.signing_public_keys);
  } catch (e) {
    throw new DaemonConfigError((e as Error).message);
  }
  if (c.mqtt_username !== undefined && c.mqtt_username !== c.robot_id) {
    // The broker takes the user name as client id (use_username_as_clientid) and grants ota/%u/#: under any
    // other name the daemon would connect but never see its deploys nor be allowed to report.
    const env = fromEnv.get('mqtt_username');
    throw new DaemonConfigError(
      `mqtt_username${env ? ` (from ${env})` : ''}: must equal robot_id (${c.robot_id}) or be left unset; the broker's ACL is keyed on the user name`,
    );
  }
  return {
    config: {
      robotId: c.robot_id,
      mqtt: {
        url: brokerUrl(c),
        username: c.mqtt_username ?? c.robot_id,
        password: resolvePassword(c),
        caFile: c.mqtt_ca_file,
        sessionExpirySeconds: c.session_expiry_s,
      },
      s3: {
        region: c.region_name,
        endpoint: c.endpoint_url,
        accessKeyId: c.aws_access_key_id,
        secretAccessKey: c.aws_secret_access_key,
      },
      cloudServiceUrl: c.cloud_service_url,
      allowedRoots: c.allowed_roots.map((r) => path.resolve(r)),
      stateDir: path.resolve(c.state_dir),
      reportIntervalMs: Math.round(c.report_interval_s * 1000),
      maxConcurrentJobs: c.max_concurrent_jobs,
      maxDownloadBytesPerSecond: c.max_download_bytes_per_s,
      signingPublicKeys: c.signing_public_keys,
    },
    unknownKeys: Object.keys(raw).filter((k) => !KNOWN_KEYS.has(k)),
  };
}

/** Reads `file` (when given) and the environment. Without a file, the environment alone must be complete. */
export function loadDaemonConfig(file: string | undefined, env: NodeJS.ProcessEnv = process.env): LoadResult {
  return parseDaemonConfig(file ? readYaml(file) : {}, env);
}

/** Checks what can only be checked on disk: the roots exist and are directories; the state dir can be created. */
export function checkDaemonPaths(config: DaemonConfig): void {
  for (const root of config.allowedRoots) {
    let stat: fs.Stats;
    try {
      stat = fs.statSync(root);
    } catch {
      throw new DaemonConfigError(`allowed_roots: ${root} does not exist`);
    }
    if (!stat.isDirectory()) throw new DaemonConfigError(`allowed_roots: ${root} is not a directory`);
  }
  try {
    // 0700: the journal holds deploy messages, whose presigned URLs are short-lived credentials.
    fs.mkdirSync(config.stateDir, { recursive: true, mode: 0o700 });
  } catch (e) {
    throw new DaemonConfigError(`state_dir: cannot create ${config.stateDir}: ${(e as NodeJS.ErrnoException).code ?? 'error'}`);
  }
}

/** What may be logged about the config: no password, no S3 secret. */
export function describeConfig(c: DaemonConfig): Record<string, unknown> {
  return {
    robot_id: c.robotId,
    broker: c.mqtt.url,
    mqtt_username: c.mqtt.username,
    allowed_roots: c.allowedRoots,
    state_dir: c.stateDir,
    report_interval_s: c.reportIntervalMs / 1000,
    max_concurrent_jobs: c.maxConcurrentJobs,
    max_download_bytes_per_s: c.maxDownloadBytesPerSecond ?? null,
    s3_fallback: Boolean(c.s3.accessKeyId && c.s3.secretAccessKey),
    signing_keys: c.signingPublicKeys.map((k) => k.slice(0, k.indexOf(':'))),
  };
}
