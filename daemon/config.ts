// The daemon's configuration: a flat YAML file (the reference daemon's keys plus ours), then environment
// overrides, validated by hand (no schema or YAML library in the robot's bundle: daemon/flat-yaml.ts). Unlike the
// reference, an invalid config is an error the caller must turn into a non-zero exit, so `Restart=on-failure` and
// operators notice it.
import fs from 'node:fs';
import path from 'node:path';
import { ROBOT_ID_PATTERN, ROBOT_ID_RULE } from '../common/ota-wire';
import { parsePublicKeys } from '../common/signing';
import { FlatYamlError, parseFlatYaml } from './flat-yaml';

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

/** The validated file, key by key (the reference's keys plus ours). */
interface FileConfig {
  robot_id: string;
  host: string;
  mqtt_port?: number;
  port?: number;
  transport: 'tcp' | 'websockets';
  ws_path?: string;
  mqtt_tls: boolean;
  mqtt_ca_file?: string;
  mqtt_username?: string;
  mqtt_password?: string;
  mqtt_password_file?: string;
  region_name: string;
  endpoint_url?: string;
  aws_access_key_id?: string;
  aws_secret_access_key?: string;
  cloud_service_url?: string;
  allowed_roots: string[];
  state_dir: string;
  report_interval_s: number;
  session_expiry_s: number;
  max_concurrent_jobs: number;
  max_download_bytes_per_s?: number;
  signing_public_keys: string[];
}

const KNOWN_KEYS = new Set<string>([
  'robot_id', 'host', 'mqtt_port', 'port', 'transport', 'ws_path', 'mqtt_tls', 'mqtt_ca_file', 'mqtt_username', 'mqtt_password',
  'mqtt_password_file', 'region_name', 'endpoint_url', 'aws_access_key_id', 'aws_secret_access_key', 'cloud_service_url',
  'allowed_roots', 'state_dir', 'report_interval_s', 'session_expiry_s', 'max_concurrent_jobs', 'max_download_bytes_per_s',
  'signing_public_keys', ...IGNORED_KEYS,
]);

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
  try {
    return parseFlatYaml(text);
  } catch (e) {
    // The reader's messages name line numbers, never contents (a line may hold a secret).
    if (e instanceof FlatYamlError) {
      throw new DaemonConfigError(`config file ${file} ${/mapping/.test(e.message) ? 'must be a YAML mapping of keys to values' : `is not valid YAML: ${e.message}`}`);
    }
    throw e;
  }
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

/**
 * Hand-written validation (the daemon bundles no schema library): every problem is collected and named by key,
 * and by the environment variable it came from.
 */
function validate(m: Record<string, unknown>, fromEnv: Map<string, string>): FileConfig {
  const issues: string[] = [];
  const fail = (where: string, message: string) => {
    const key = where.replace(/\[.*$/, '');
    const env = fromEnv.get(key);
    issues.push(`${where}${env ? ` (from ${env})` : ''}: ${message}`);
  };
  const present = (k: string) => m[k] !== undefined && m[k] !== null;
  // An empty optional value (e.g. `S3_ENDPOINT_URL=` in a .env file) means "not set" rather than "invalid".
  const optionalText = (k: string): string | undefined => {
    const v = m[k];
    if (v === undefined || v === null || v === '') return undefined;
    if (typeof v !== 'string' && typeof v !== 'number') return void fail(k, 'expected a string');
    return String(v);
  };
  const absolute = (where: string, v: unknown): string | undefined => {
    if (typeof v !== 'string' || v === '') return void fail(where, 'expected a non-empty string');
    if (!path.isAbsolute(v)) return void fail(where, 'must be an absolute path');
    return v;
  };
  // Env values arrive as strings: numeric keys accept digit strings.
  const number = (k: string, o: { int?: boolean; min: number; max: number; exclusiveMin?: boolean }, fallback?: number): number | undefined => {
    let v = m[k];
    if (v === undefined || v === null) return fallback;
    if (typeof v === 'string' && /^\s*\d+(\.\d+)?\s*$/.test(v)) v = Number(v);
    if (typeof v !== 'number' || Number.isNaN(v)) return void fail(k, 'expected a number');
    if (o.int && !Number.isInteger(v)) return void fail(k, 'expected an integer');
    if (o.exclusiveMin ? v <= o.min : v < o.min) return void fail(k, `must be ${o.exclusiveMin ? '>' : '>='} ${o.min}`);
    if (v > o.max) return void fail(k, `must be <= ${o.max}`);
    return v;
  };
  const bool = (k: string, fallback: boolean): boolean => {
    const v = m[k];
    if (v === undefined || v === null) return fallback;
    if (v === true || v === 'true') return true;
    if (v === false || v === 'false') return false;
    fail(k, 'expected true or false');
    return fallback;
  };
  const stringList = (k: string): string[] => {
    const v = m[k];
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'string' && x !== '')) return (fail(k, 'expected a list of strings'), []);
    return v as string[];
  };

  let robotId = '';
  if (!present('robot_id') || m.robot_id === '') fail('robot_id', 'is required');
  else if (typeof m.robot_id !== 'string' || !ROBOT_ID_PATTERN.test(m.robot_id)) fail('robot_id', ROBOT_ID_RULE);
  else robotId = m.robot_id;

  const transport = m.transport ?? 'tcp';
  if (transport !== 'tcp' && transport !== 'websockets') fail('transport', 'must be tcp or websockets');
  const endpoint = optionalText('endpoint_url');
  if (endpoint !== undefined) {
    try {
      new URL(endpoint);
    } catch {
      fail('endpoint_url', 'must be a URL');
    }
  }
  const caFile = optionalText('mqtt_ca_file');
  if (caFile !== undefined) absolute('mqtt_ca_file', caFile);
  const passwordFile = optionalText('mqtt_password_file');
  if (passwordFile !== undefined) absolute('mqtt_password_file', passwordFile);

  let roots: string[] = [];
  const rawRoots = m.allowed_roots;
  if (!Array.isArray(rawRoots) || rawRoots.length === 0) {
    fail('allowed_roots', rawRoots === undefined ? 'is required' : 'must list at least one absolute directory');
  } else {
    roots = rawRoots.map((r, i) => absolute(`allowed_roots[${i}]`, r) ?? '');
  }
  let stateDir = '';
  if (!present('state_dir')) fail('state_dir', 'is required');
  else stateDir = absolute('state_dir', m.state_dir) ?? '';

  const c: FileConfig = {
    robot_id: robotId,
    host: optionalText('host') ?? 'localhost',
    mqtt_port: number('mqtt_port', { int: true, min: 1, max: 65535 }),
    port: number('port', { int: true, min: 1, max: 65535 }),
    transport: transport as FileConfig['transport'],
    ws_path: optionalText('ws_path'),
    mqtt_tls: bool('mqtt_tls', false),
    mqtt_ca_file: caFile,
    mqtt_username: optionalText('mqtt_username'),
    mqtt_password: optionalText('mqtt_password'),
    mqtt_password_file: passwordFile,
    region_name: optionalText('region_name') ?? 'us-east-1',
    endpoint_url: endpoint,
    aws_access_key_id: optionalText('aws_access_key_id'),
    aws_secret_access_key: optionalText('aws_secret_access_key'),
    cloud_service_url: optionalText('cloud_service_url'),
    allowed_roots: roots,
    state_dir: stateDir,
    report_interval_s: number('report_interval_s', { min: 0, max: 86400, exclusiveMin: true }, 30) ?? 30,
    session_expiry_s: number('session_expiry_s', { int: true, min: 0, max: 0xffffffff }, 604800) ?? 604800,
    max_concurrent_jobs: number('max_concurrent_jobs', { int: true, min: 1, max: 64 }, 2) ?? 2,
    max_download_bytes_per_s: number('max_download_bytes_per_s', { int: true, min: 1024, max: Number.MAX_SAFE_INTEGER }),
    signing_public_keys: stringList('signing_public_keys'),
  };
  if (issues.length > 0) throw new DaemonConfigError(`invalid config: ${issues.join('; ')}`);
  return c;
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
  const c = validate(merged, fromEnv);
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
