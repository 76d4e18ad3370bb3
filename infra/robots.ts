// Robot provisioning (`npm run robot -- add ID --root DIR... | list | remove ID`, and /api/v1/robots): the one way
// a robot gets an identity, used for the simulated fleet too (infra/fleet.ts).
// - MQTT credential: a line in the broker's robot password file (Mosquitto's own PBKDF2-SHA512 "$7$" hash), then
//   SIGHUP. Measured on Mosquitto 2.0.11: SIGHUP reloads the password and ACL files without dropping the other
//   clients, a new user can log in at once, and a client whose user was removed is disconnected. A reload after a
//   restart corrupted the stock broker: the stack runs it patched (infra/README.md, "Why the broker is patched").
// - Registry: the robot and its deploy roots in the cloud database (collection `robots`).
// - Daemon config: only what the robot needs: its own credential, its roots, the cloud's signing public keys. No S3
//   key: downloads use the presigned URL in each deploy message.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import mqtt from 'mqtt';
import type { Config } from '../common/config';
import type { RobotModels } from '../common/models/robots';
import { robotIdSchema } from '../common/protocol';
import { loadSigningKeys, publicKeyEntries } from '../common/signing-keys';
import { runningPid, stackPaths } from './proc';

export const brokerRobotPasswordFile = (cfg: Pick<Config, 'dataDir'>) => path.join(cfg.dataDir, 'mosquitto', 'passwd-robots');

/** Mosquitto 2.0's password hash: `$7$<iterations>$<base64 salt>$<base64 PBKDF2-SHA512>` (as mosquitto_passwd writes). */
export function mosquittoHash(password: string, salt = crypto.randomBytes(12), iterations = 101): string {
  const hash = crypto.pbkdf2Sync(password, salt, iterations, 64, 'sha512');
  return `$7$${iterations}$${salt.toString('base64')}$${hash.toString('base64')}`;
}

function hashMatches(stored: string, password: string): boolean {
  const m = /^\$7\$(\d+)\$([^$]+)\$([^$]+)$/.exec(stored);
  if (!m) return false;
  return mosquittoHash(password, Buffer.from(m[2], 'base64'), Number(m[1])) === stored;
}

function readUsers(file: string): Map<string, string> {
  const users = new Map<string, string>();
  if (!fs.existsSync(file)) return users;
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const at = line.indexOf(':');
    if (at > 0) users.set(line.slice(0, at), line.slice(at + 1));
  }
  return users;
}

function writeUsers(file: string, users: Map<string, string>): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, [...users].map(([u, h]) => `${u}:${h}\n`).join(''), { mode: 0o600 });
  fs.renameSync(tmp, file); // the broker never reads a half-written file
}

/** Sets the users' passwords in the broker's password file; true if the file changed. */
export function upsertBrokerUsers(file: string, entries: ReadonlyArray<readonly [string, string]>): boolean {
  const users = readUsers(file);
  let changed = false;
  for (const [user, password] of entries) {
    const current = users.get(user);
    if (current !== undefined && hashMatches(current, password)) continue;
    users.set(user, mosquittoHash(password));
    changed = true;
  }
  if (changed) writeUsers(file, users);
  return changed;
}

export function removeBrokerUser(file: string, user: string): boolean {
  const users = readUsers(file);
  if (!users.delete(user)) return false;
  writeUsers(file, users);
  return true;
}

/** Makes a running broker re-read its password and ACL files; false when this stack's broker is not running. */
export function reloadBroker(cfg: Pick<Config, 'dataDir'>): boolean {
  const pid = runningPid(stackPaths(cfg), 'mosquitto');
  if (pid === null) return false;
  process.kill(pid, 'SIGHUP');
  return true;
}

export interface DaemonConfigFields {
  robotId: string;
  password: string;
  roots: readonly string[];
  stateDir: string;
  signingPublicKeys: readonly string[];
}

/**
 * The daemon config a provisioned robot gets, as flat YAML (strings as JSON-quoted scalars, lists as `- item`):
 * the subset the daemon's own small reader parses.
 */
export function daemonConfigText(cfg: Pick<Config, 'mqtt' | 'api'>, f: DaemonConfigFields): string {
  const q = (v: string) => JSON.stringify(v);
  const list = (key: string, items: readonly string[]) => [`${key}:`, ...items.map((i) => `  - ${q(i)}`)];
  const broker = new URL(cfg.mqtt.url);
  return [
    '# fleetsync OTA daemon config, written by `npm run robot -- add`. Holds this robot\'s own MQTT password: keep it 0600.',
    `robot_id: ${q(f.robotId)}`,
    `host: ${q(broker.hostname)}`,
    `mqtt_port: ${broker.port || (broker.protocol === 'mqtts:' ? 8883 : 1883)}`,
    ...(broker.protocol === 'mqtts:' ? ['mqtt_tls: true'] : []),
    `mqtt_username: ${q(f.robotId)}`,
    `mqtt_password: ${q(f.password)}`,
    `cloud_service_url: ${q(`${cfg.api.publicUrl}/api/v1`)}`,
    ...list('allowed_roots', f.roots),
    `state_dir: ${q(f.stateDir)}`,
    ...list('signing_public_keys', f.signingPublicKeys),
    '',
  ].join('\n');
}

export function writeDaemonConfig(file: string, text: string): boolean {
  if (fs.existsSync(file) && fs.readFileSync(file, 'utf8') === text) return false;
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, text, { mode: 0o600 });
  fs.renameSync(tmp, file);
  return true;
}

export class ProvisioningError extends Error {
  override name = 'ProvisioningError';
}

/** Validates a robot id and its roots; throws a ProvisioningError naming the field. */
export function checkRobotInput(id: string, roots: readonly string[]): string[] {
  const r = robotIdSchema.safeParse(id);
  if (!r.success) throw new ProvisioningError(`robot_id: ${r.error.issues[0]?.message ?? 'invalid'}`);
  if (roots.length === 0) throw new ProvisioningError('roots: at least one --root DIR is required');
  return roots.map((root, i) => {
    if (!path.isAbsolute(root)) throw new ProvisioningError(`roots[${i}]: must be an absolute path`);
    if (root.split('/').includes('..')) throw new ProvisioningError(`roots[${i}]: must not contain ".." segments`);
    return path.resolve(root);
  });
}

/**
 * Records (or updates) robots in the registry, insert-first: one read of which ids exist (a scan per 1,000 ids),
 * new robots inserted in chunks of 50 (cheap), and only robots whose record differs updated. FerretDB updates
 * document by document (~30 ms each) and scans per statement: upserting a 10,000-robot fleet took ~6 min.
 */
export async function recordRobots(models: RobotModels, robots: ReadonlyArray<{ id: string; roots: readonly string[] }>): Promise<void> {
  const now = new Date();
  const existing = new Map<string, { deploy_roots?: string[]; mqtt_username?: string | null }>();
  for (let i = 0; i < robots.length; i += 1000) {
    const ids = robots.slice(i, i + 1000).map((r) => r.id);
    for (const row of await models.Robot.find({ _id: { $in: ids } }, { deploy_roots: 1, mqtt_username: 1 }).lean()) existing.set(String(row._id), row);
  }
  const fresh = robots.filter((r) => !existing.has(r.id));
  const changed = robots.filter((r) => {
    const e = existing.get(r.id);
    return e !== undefined && (e.mqtt_username !== r.id || JSON.stringify(e.deploy_roots ?? []) !== JSON.stringify([...r.roots]));
  });
  for (let i = 0; i < fresh.length; i += 50) {
    const docs = fresh.slice(i, i + 50).map((r) => ({ _id: r.id, deploy_roots: [...r.roots], mqtt_username: r.id, created_at: now, updated_at: now }));
    // Unordered; a robot recorded meanwhile (another process) is a duplicate key: it gets the update below.
    await models.Robot.insertMany(docs, { ordered: false }).catch((err: { writeErrors?: Array<{ code?: number; err?: { code?: number } }>; code?: number }) => {
      const errors = Array.isArray(err.writeErrors) ? err.writeErrors : [];
      if (!(errors.length > 0 ? errors.every((w) => (w.code ?? w.err?.code) === 11000) : err.code === 11000)) throw err;
      changed.push(...fresh.slice(i, i + 50));
    });
  }
  for (let i = 0; i < changed.length; i += 50) {
    await models.Robot.bulkWrite(
      changed.slice(i, i + 50).map((r) => ({
        updateOne: {
          filter: { _id: r.id },
          update: { $set: { deploy_roots: [...r.roots], mqtt_username: r.id, updated_at: now }, $setOnInsert: { created_at: now } },
          upsert: true,
        },
      })),
    );
  }
}

/** True once `username` can log in on the robots' listener (the broker handles SIGHUP asynchronously). */
async function canLogIn(cfg: Pick<Config, 'mqtt'>, username: string, password: string, timeoutMs = 5000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await mqtt
      .connectAsync(cfg.mqtt.url, { username, password, protocolVersion: 5, reconnectPeriod: 0, connectTimeout: 2000, clean: true })
      .then(async (c) => (await c.endAsync(), true), () => false);
    if (ok || Date.now() > deadline) return ok;
    await new Promise((r) => setTimeout(r, 100));
  }
}

export interface AddRobotOptions {
  id: string;
  roots: readonly string[];
  /** Where to write the daemon config (default <dataDir>/robots/<id>/ota-daemon.yaml); null: only return it. */
  configPath?: string | null;
  /** The daemon's state dir on the robot (default <dataDir>/robots/<id>/ota-state, a local robot's). */
  stateDir?: string;
}

export interface AddRobotResult {
  id: string;
  roots: string[];
  configPath: string | null;
  /** The daemon config text (holds the robot's password: the API returns it once, to an admin). */
  configText: string;
  brokerReloaded: boolean;
}

/**
 * Provisions a robot: a new MQTT credential (a re-add issues a new password and cuts the old one off), its roots
 * in the registry, its daemon config. The other robots stay connected.
 */
export async function addRobot(cfg: Config, models: RobotModels, o: AddRobotOptions): Promise<AddRobotResult> {
  const roots = checkRobotInput(o.id, o.roots);
  const dir = path.join(cfg.dataDir, 'robots', o.id);
  const configPath = o.configPath === null ? null : path.resolve(o.configPath ?? path.join(dir, 'ota-daemon.yaml'));
  const stateDir = path.resolve(o.stateDir ?? path.join(dir, 'ota-state'));
  const password = crypto.randomBytes(18).toString('base64url');
  const configText = daemonConfigText(cfg, {
    robotId: o.id,
    password,
    roots,
    stateDir,
    signingPublicKeys: publicKeyEntries(loadSigningKeys(cfg)),
  });
  await recordRobots(models, [{ id: o.id, roots }]);
  upsertBrokerUsers(brokerRobotPasswordFile(cfg), [[o.id, password]]);
  const brokerReloaded = reloadBroker(cfg);
  if (brokerReloaded && !(await canLogIn(cfg, o.id, password))) {
    throw new ProvisioningError(`the broker did not accept ${o.id}'s new credential after reloading its password file`);
  }
  if (configPath) writeDaemonConfig(configPath, configText);
  return { id: o.id, roots, configPath, configText, brokerReloaded };
}

/** Revokes the robot's MQTT credential (the broker disconnects it on reload) and removes it from the registry. */
export async function removeRobot(cfg: Config, models: RobotModels, id: string): Promise<{ removed: boolean }> {
  const r = robotIdSchema.safeParse(id);
  if (!r.success) throw new ProvisioningError(`robot_id: ${r.error.issues[0]?.message ?? 'invalid'}`);
  const revoked = removeBrokerUser(brokerRobotPasswordFile(cfg), id);
  if (revoked) reloadBroker(cfg);
  // A robot that belongs to a center stays in the registry (cloud sync still serves it): only its OTA
  // provisioning goes. Any other robot's entry is removed.
  const { deletedCount } = await models.Robot.deleteOne({ _id: id, center_id: null });
  const { modifiedCount } = deletedCount
    ? { modifiedCount: 0 }
    : await models.Robot.updateOne({ _id: id, mqtt_username: { $ne: null } }, { $set: { mqtt_username: null, deploy_roots: [], updated_at: new Date() } });
  return { removed: revoked || deletedCount > 0 || modifiedCount > 0 };
}

/** The robots provisioned for OTA (the registry also holds center robots that are not). */
export async function listRobots(models: RobotModels): Promise<Array<{ robot_id: string; deploy_roots: string[]; center_id: string | null; created_at: Date | null }>> {
  const rows = await models.Robot.find({ mqtt_username: { $ne: null } }, { deploy_roots: 1, center_id: 1, created_at: 1 }).sort({ _id: 1 }).lean();
  return rows.map((r) => ({ robot_id: String(r._id), deploy_roots: r.deploy_roots, center_id: r.center_id ?? null, created_at: r.created_at ?? null }));
}
