// Daemon config: reference keys + ours, env overrides as in the reference, and errors that name the key.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { repoRoot } from '../../common/config';
import { DaemonConfigError, describeConfig, loadDaemonConfig, parseDaemonConfig } from '../../daemon/config';

const base = () => ({
  robot_id: 'robot07',
  host: 'broker.local',
  mqtt_password: 's3cret-mqtt',
  allowed_roots: ['/opt/robot'],
  state_dir: '/var/lib/ota',
});

function errorOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(DaemonConfigError);
    return (e as Error).message;
  }
  throw new Error('expected a DaemonConfigError');
}

let tmp: string;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ota-config-'));
});
afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('daemon config', () => {
  test('applies the documented defaults', () => {
    const { config, unknownKeys } = parseDaemonConfig(base());
    expect(config.robotId).toBe('robot07');
    expect(config.mqtt.url).toBe('mqtt://broker.local:1883');
    expect(config.mqtt.username).toBe('robot07');
    expect(config.mqtt.password).toBe('s3cret-mqtt');
    expect(config.mqtt.sessionExpirySeconds).toBe(604800);
    expect(config.reportIntervalMs).toBe(30000);
    expect(config.maxConcurrentJobs).toBe(2);
    expect(config.s3.region).toBe('us-east-1');
    expect(unknownKeys).toEqual([]);
  });

  test('accepts a reference-style file with all its keys', () => {
    const { config, unknownKeys } = parseDaemonConfig({
      ...base(),
      region_name: 'eu-west-1',
      endpoint_url: 'http://s3.local:7070',
      aws_access_key_id: 'AKID',
      aws_secret_access_key: 'SECRET',
      cloud_service_url: 'http://cloud:9005/api/v1',
      port: 2883,
      topic_pattern: 'ota/{robot_id}/{operation}',
      mystery: 1,
    });
    expect(config.mqtt.url).toBe('mqtt://broker.local:2883');
    expect(config.s3).toEqual({ region: 'eu-west-1', endpoint: 'http://s3.local:7070', accessKeyId: 'AKID', secretAccessKey: 'SECRET' });
    expect(config.cloudServiceUrl).toBe('http://cloud:9005/api/v1');
    expect(unknownKeys).toEqual(['mystery']);
  });

  test.each([
    ['robot_id', { robot_id: undefined }, /robot_id: is required/],
    ['robot_id', { robot_id: 'bad/id' }, /robot_id: robot_id must match/],
    ['allowed_roots', { allowed_roots: [] }, /allowed_roots: must list at least one/],
    ['allowed_roots', { allowed_roots: ['relative/dir'] }, /allowed_roots\[0\]: must be an absolute path/],
    ['state_dir', { state_dir: undefined }, /state_dir: is required/],
    ['state_dir', { state_dir: 'state' }, /state_dir: must be an absolute path/],
    ['mqtt_port', { mqtt_port: 70000 }, /mqtt_port: /],
    ['max_concurrent_jobs', { max_concurrent_jobs: 0 }, /max_concurrent_jobs: /],
    ['report_interval_s', { report_interval_s: 'often' }, /report_interval_s: /],
    ['endpoint_url', { endpoint_url: 'not a url' }, /endpoint_url: /],
    ['mqtt_password', { mqtt_password: undefined }, /mqtt_password: is required/],
  ])('an invalid %s is rejected with an error naming it', (_key, patch, pattern) => {
    expect(errorOf(() => parseDaemonConfig({ ...base(), ...patch }))).toMatch(pattern);
  });

  test('environment variables override the file, even with values the file would not have', () => {
    const { config } = parseDaemonConfig(base(), {
      ROBOT_ID: 'robot09',
      MQTT_HOST: '10.1.2.3',
      MQTT_PORT: '8883',
      OTA_MQTT_USERNAME: 'robot09',
      OTA_MQTT_PASSWORD: 'from-env',
      S3_ENDPOINT_URL: 'http://127.0.0.1:7070',
      S3_ID: 'id-env',
      S3_ACCESS_KEY: 'secret-env',
      CLOUD_SERVICE_URL: 'http://c/api/v1',
      OTA_ALLOWED_ROOTS: '/srv/a:/srv/b:',
      OTA_STATE_DIR: '/run/ota',
    });
    expect(config.robotId).toBe('robot09');
    expect(config.mqtt).toMatchObject({ url: 'mqtt://10.1.2.3:8883', username: 'robot09', password: 'from-env' });
    expect(config.s3).toMatchObject({ endpoint: 'http://127.0.0.1:7070', accessKeyId: 'id-env', secretAccessKey: 'secret-env' });
    expect(config.allowedRoots).toEqual(['/srv/a', '/srv/b']);
    expect(config.stateDir).toBe('/run/ota');
  });

  test("the cloud's MQTT_USERNAME / MQTT_PASSWORD (exported in the same shell) never become the robot's", () => {
    const { config } = parseDaemonConfig(base(), { MQTT_USERNAME: 'cloud', MQTT_PASSWORD: 'cloud-secret' });
    expect(config.mqtt).toMatchObject({ username: 'robot07', password: 's3cret-mqtt' });
  });

  test('mqtt_username other than robot_id is rejected (the broker uses it as client id and ACL key); empty means robot_id', () => {
    expect(errorOf(() => parseDaemonConfig({ ...base(), mqtt_username: 'robot08' }))).toMatch(
      /^mqtt_username: must equal robot_id \(robot07\)/,
    );
    expect(errorOf(() => parseDaemonConfig(base(), { OTA_MQTT_USERNAME: 'cloud' }))).toMatch(/^mqtt_username \(from OTA_MQTT_USERNAME\): must equal robot_id/);
    expect(parseDaemonConfig({ ...base(), mqtt_username: 'robot07' }).config.mqtt.username).toBe('robot07');
    expect(parseDaemonConfig({ ...base(), mqtt_username: '' }).config.mqtt.username).toBe('robot07');
    expect(parseDaemonConfig(base(), { OTA_MQTT_USERNAME: '' }).config.mqtt.username).toBe('robot07');
    expect(parseDaemonConfig({ ...base(), mqtt_username: 'robot09' }, { ROBOT_ID: 'robot09' }).config.mqtt.username).toBe('robot09');
  });

  test('an invalid environment value names both the key and the variable', () => {
    expect(errorOf(() => parseDaemonConfig(base(), { MQTT_PORT: 'abc' }))).toMatch(/mqtt_port \(from MQTT_PORT\): /);
    expect(errorOf(() => parseDaemonConfig(base(), { OTA_ALLOWED_ROOTS: 'rel' }))).toMatch(/allowed_roots\[0\] \(from OTA_ALLOWED_ROOTS\)/);
  });

  test('an empty optional variable (as in a shipped .env) means unset rather than invalid', () => {
    const { config } = parseDaemonConfig(base(), { S3_ENDPOINT_URL: '', S3_ID: '', S3_ACCESS_KEY: '' });
    expect(config.s3.endpoint).toBeUndefined();
    expect(config.s3.accessKeyId).toBeUndefined();
  });

  test('reads the MQTT password from mqtt_password_file, and names that key when it cannot', () => {
    const file = path.join(tmp, 'mqtt.password');
    fs.writeFileSync(file, 'pw-from-file\n', { mode: 0o600 });
    const { mqtt_password: _omit, ...noPassword } = base();
    expect(parseDaemonConfig({ ...noPassword, mqtt_password_file: file }).config.mqtt.password).toBe('pw-from-file');
    expect(errorOf(() => parseDaemonConfig({ ...noPassword, mqtt_password_file: path.join(tmp, 'missing') }))).toMatch(
      /mqtt_password_file: cannot read/,
    );
  });

  test('websockets and TLS build the matching broker URL', () => {
    expect(parseDaemonConfig({ ...base(), transport: 'websockets', ws_path: 'mqtt', mqtt_port: 9001 }).config.mqtt.url).toBe(
      'ws://broker.local:9001/mqtt',
    );
    expect(parseDaemonConfig({ ...base(), mqtt_tls: true, mqtt_port: 8883 }).config.mqtt.url).toBe('mqtts://broker.local:8883');
  });

  test('loads YAML from a file; the loggable description holds no secret', () => {
    const file = path.join(tmp, 'ota.yaml');
    fs.writeFileSync(file, YAML.stringify({ ...base(), aws_access_key_id: 'AKID', aws_secret_access_key: 'S3-SECRET' }));
    const { config } = loadDaemonConfig(file, {});
    const described = JSON.stringify(describeConfig(config));
    expect(described).toContain('robot07');
    expect(described).not.toContain('s3cret-mqtt');
    expect(described).not.toContain('S3-SECRET');
  });

  test('the shipped example config is valid', () => {
    const { config, unknownKeys } = loadDaemonConfig(path.join(repoRoot, 'daemon/ota-daemon.example.yaml'), {
      OTA_MQTT_PASSWORD: 'x',
    });
    expect(config.allowedRoots).toEqual(['/opt/robot/files']);
    expect(unknownKeys).toEqual([]);
  });

  test('a file that is not a YAML mapping is rejected', () => {
    const file = path.join(tmp, 'list.yaml');
    fs.writeFileSync(file, '- a\n- b\n');
    expect(errorOf(() => loadDaemonConfig(file, {}))).toMatch(/must be a YAML mapping/);
  });
});

describe('daemon entry point with a bad config', () => {
  function runMain(args: string[], env: Record<string, string> = {}) {
    const clean = Object.fromEntries(
      Object.entries(process.env).filter(([k]) => !['ROBOT_ID', 'MQTT_HOST', 'MQTT_PORT', 'OTA_MQTT_USERNAME', 'OTA_MQTT_PASSWORD', 'OTA_STATE_DIR', 'OTA_ALLOWED_ROOTS'].includes(k)),
    );
    return spawnSync(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'daemon/main.ts'), ...args], {
      cwd: repoRoot,
      env: { ...clean, ...env },
      encoding: 'utf8',
      timeout: 30000,
    });
  }

  test('exits with status 2 and a log line naming the key (the reference exited 0)', () => {
    const file = path.join(tmp, 'bad.yaml');
    fs.writeFileSync(file, YAML.stringify({ ...base(), allowed_roots: ['not/absolute'], mqtt_password: 'hunter2-secret' }));
    const r = runMain(['--config', file]);
    expect(r.status).toBe(2);
    expect(r.stdout).toMatch(/allowed_roots\[0\]: must be an absolute path/);
    expect(r.stdout + r.stderr).not.toContain('hunter2-secret');
  });

  test('exits with status 2 naming mqtt_username when it is not the robot_id', () => {
    const file = path.join(tmp, 'user.yaml');
    fs.writeFileSync(file, YAML.stringify({ ...base(), mqtt_username: 'someone-else', state_dir: path.join(tmp, 'state') }));
    const r = runMain(['--config', file]);
    expect(r.status).toBe(2);
    expect(r.stdout).toMatch(/mqtt_username: must equal robot_id/);
  });

  test('exits with status 2 when an allowed root does not exist', () => {
    const file = path.join(tmp, 'missing-root.yaml');
    fs.writeFileSync(file, YAML.stringify({ ...base(), allowed_roots: [path.join(tmp, 'nope')], state_dir: path.join(tmp, 'state') }));
    const r = runMain(['--config', file]);
    expect(r.status).toBe(2);
    expect(r.stdout).toMatch(/allowed_roots: .*nope does not exist/);
  });
});

test('a YAML syntax error does not echo the file (which may hold a secret)', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ota-config-'));
  try {
    const file = path.join(dir, 'broken.yaml');
    fs.writeFileSync(file, 'robot_id: r1\nmqtt_password: "hunter2-secret\nhost: [x\n');
    expect(errorOf(() => loadDaemonConfig(file, {}))).not.toContain('hunter2-secret');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
