// The simulated fleet: per robot an OpenSSH sshd (own port, host key, filesystem root), provisioned for OTA the way
// `npm run robot -- add` provisions a real robot (infra/robots.ts: broker credential, daemon config with no cloud
// secret; the registry record is written by stackUp once the database runs). Everything lives under
// <dataDir>/fleet/<robot_id>/ and is created idempotently. The manifest (fleet.json) holds no secret: credentials
// are referenced by file path.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Config } from '../common/config';
import { fingerprint } from '../activities/ssh/connect';
import { loadSigningKeys, publicKeyEntries } from '../common/signing-keys';
import { brokerRobotPasswordFile, daemonConfigText, upsertBrokerUsers, writeDaemonConfig } from './robots';

export interface RobotManifest {
  id: string;
  /** The robot's filesystem root: the only place its OTA daemon may write, and where SFTP sessions start. */
  root: string;
  ssh: { host: string; port: number; username: string; hostKeyFile: string; hostKeySha256: string };
  mqtt: { username: string; passwordFile: string };
  dir: string;
  sshdConfig: string;
  daemonConfig: string;
  stateDir: string;
}

export interface FleetManifest {
  /** The cloud side's SSH client key (private key file path; authorised on every simulated robot). */
  clientKeyFile: string;
  robots: RobotManifest[];
}

export const robotId = (i: number) => `robot${String(i + 1).padStart(2, '0')}`;

function writeIfChanged(file: string, body: string, mode = 0o644): boolean {
  if (fs.existsSync(file) && fs.readFileSync(file, 'utf8') === body) return false;
  fs.writeFileSync(file, body, { mode });
  return true;
}

function secretFile(file: string): string {
  if (!fs.existsSync(file)) fs.writeFileSync(file, crypto.randomBytes(18).toString('base64url'), { mode: 0o600 });
  return fs.readFileSync(file, 'utf8').trim();
}

/** An SSH wire-format string (uint32 length + bytes). */
function sshString(b: Buffer | string): Buffer {
  const body = typeof b === 'string' ? Buffer.from(b) : b;
  const len = Buffer.alloc(4);
  len.writeUInt32BE(body.length);
  return Buffer.concat([len, body]);
}

/**
 * An unencrypted ed25519 key pair in OpenSSH's own formats (what `ssh-keygen -t ed25519 -N ''` writes), made in
 * process: spawning ssh-keygen per robot cost ~45 ms each on a busy 2-core box, most of a 10,000-robot fleet's
 * setup. Format: PROTOCOL.key in OpenSSH's sources ("openssh-key-v1", cipher and kdf "none").
 */
export function ed25519OpenSshKeyPair(comment: string): { privateKey: string; publicKey: string } {
  const jwk = crypto.generateKeyPairSync('ed25519').privateKey.export({ format: 'jwk' });
  const seed = Buffer.from(jwk.d!, 'base64url');
  const pub = Buffer.from(jwk.x!, 'base64url');
  const pubBlob = Buffer.concat([sshString('ssh-ed25519'), sshString(pub)]);
  const check = crypto.randomBytes(4);
  let priv = Buffer.concat([check, check, sshString('ssh-ed25519'), sshString(pub), sshString(Buffer.concat([seed, pub])), sshString(comment)]);
  const pad = (8 - (priv.length % 8)) % 8;
  priv = Buffer.concat([priv, Buffer.from(Array.from({ length: pad }, (_, i) => i + 1))]);
  const nkeys = Buffer.alloc(4);
  nkeys.writeUInt32BE(1);
  const blob = Buffer.concat([Buffer.from('openssh-key-v1\0'), sshString('none'), sshString('none'), sshString(''), nkeys, sshString(pubBlob), sshString(priv)]);
  const b64 = blob.toString('base64').replace(/.{1,70}/g, '$&\n');
  return {
    privateKey: `-----BEGIN OPENSSH PRIVATE KEY-----\n${b64}-----END OPENSSH PRIVATE KEY-----\n`,
    publicKey: `ssh-ed25519 ${pubBlob.toString('base64')} ${comment}\n`,
  };
}

function sshKey(file: string): void {
  if (fs.existsSync(file)) return;
  const { privateKey, publicKey } = ed25519OpenSshKeyPair(path.basename(file));
  fs.writeFileSync(`${file}.pub`, publicKey, { mode: 0o644 });
  fs.writeFileSync(file, privateKey, { mode: 0o600 });
}

/** OpenSSH's "SHA256:<base64>" fingerprint of a public key line ("ssh-ed25519 AAAA... comment"). */
export function fingerprintOfPublicKey(pubLine: string): string {
  return fingerprint(Buffer.from(pubLine.trim().split(/\s+/)[1], 'base64'));
}

export function fleetManifestPath(cfg: Config): string {
  return path.join(cfg.fleet.dir, 'fleet.json');
}

export function readFleet(cfg: Config): FleetManifest {
  return JSON.parse(fs.readFileSync(fleetManifestPath(cfg), 'utf8')) as FleetManifest;
}

export function readSecret(file: string): string {
  return fs.readFileSync(file, 'utf8').trim();
}

/**
 * Creates (or completes) robots `robot01…`; returns the manifest. The fleet never shrinks: a later call with a
 * smaller count keeps the robots an earlier call made (tests use robots beyond the demo fleet's).
 */
export function provisionFleet(cfg: Config, count: number): FleetManifest {
  const fleetDir = cfg.fleet.dir;
  if (fs.existsSync(fleetManifestPath(cfg))) count = Math.max(count, readFleet(cfg).robots.length);
  fs.mkdirSync(path.join(fleetDir, 'keys'), { recursive: true });
  const clientKeyFile = path.join(fleetDir, 'keys', 'cloud_ed25519');
  sshKey(clientKeyFile);
  const clientPub = fs.readFileSync(`${clientKeyFile}.pub`, 'utf8');
  const username = os.userInfo().username;

  const robots: RobotManifest[] = [];
  const signingPublicKeys = publicKeyEntries(loadSigningKeys(cfg));
  const credentials: Array<[string, string]> = [];
  for (let i = 0; i < count; i++) {
    const id = robotId(i);
    const dir = path.join(fleetDir, id);
    const root = path.join(dir, 'root');
    const stateDir = path.join(dir, 'ota-state');
    for (const d of [dir, root, stateDir]) fs.mkdirSync(d, { recursive: true });
    const hostKeyFile = path.join(dir, 'ssh_host_ed25519_key');
    sshKey(hostKeyFile);
    writeIfChanged(path.join(dir, 'authorized_keys'), clientPub, 0o600);
    const port = cfg.fleet.sshBasePort + i;
    const sshdConfig = path.join(dir, 'sshd_config');
    writeIfChanged(
      sshdConfig,
      [
        `Port ${port}`,
        'ListenAddress 127.0.0.1',
        `HostKey ${hostKeyFile}`,
        `PidFile ${path.join(dir, 'sshd.pid')}`,
        `AuthorizedKeysFile ${path.join(dir, 'authorized_keys')}`,
        'PubkeyAuthentication yes',
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'UsePAM no',
        'StrictModes no',
        'PermitRootLogin prohibit-password',
        `AllowUsers ${username}`,
        // A robot's remote commands get its own directory (no .bashrc) as home, not this machine's user's: bash
        // sources ~/.bashrc for every command sshd runs, and a developer's (pyenv init here) cost ~90 ms per
        // command, which no robot pays and which would count against whoever runs more commands (bench/robot-sync.ts).
        `SetEnv HOME=${dir}`,
        // SFTP sessions start in the robot's root, so relative paths land inside it.
        `Subsystem sftp internal-sftp -d ${root}`,
        'LogLevel ERROR',
        '',
      ].join('\n'),
    );
    const passwordFile = path.join(dir, 'mqtt.password');
    const mqttPassword = secretFile(passwordFile);
    const daemonConfig = path.join(dir, 'ota-config.yaml');
    credentials.push([id, mqttPassword]);
    // A robot-local file holding that robot's own secret, as on a real robot (0600); no S3 key (presigned URLs).
    writeDaemonConfig(daemonConfig, daemonConfigText(cfg, { robotId: id, password: mqttPassword, roots: [root], stateDir, signingPublicKeys }));
    robots.push({
      id,
      root,
      ssh: {
        host: '127.0.0.1',
        port,
        username,
        hostKeyFile: `${hostKeyFile}.pub`,
        hostKeySha256: fingerprintOfPublicKey(fs.readFileSync(`${hostKeyFile}.pub`, 'utf8')),
      },
      mqtt: { username: id, passwordFile },
      dir,
      sshdConfig,
      daemonConfig,
      stateDir,
    });
  }
  // One write (and the stack's one SIGHUP) for the whole fleet; robots added by `npm run robot -- add` stay.
  upsertBrokerUsers(brokerRobotPasswordFile(cfg), credentials);
  const manifest: FleetManifest = { clientKeyFile, robots };
  writeIfChanged(fleetManifestPath(cfg), JSON.stringify(manifest, null, 2) + '\n');
  return manifest;
}
