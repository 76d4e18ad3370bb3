// SSH to a robot with its host key pinned: ssh2 accepts any host key unless told otherwise, so every
// connection compares the server's key with the fingerprint recorded for that robot and refuses a mismatch.
// Credentials stay behind references: a key file path or the *name* of the environment variable holding the
// password; the secret itself is read here, at connect time, and goes nowhere else (no workflow, no log).
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import { Client, type ConnectConfig, type SFTPWrapper } from 'ssh2';
import type { RobotSshTarget } from '../../common/robot-directory';

export type { RobotSshTarget };

export class HostKeyMismatchError extends Error {
  override name = 'HostKeyMismatchError';
}

/** The robot did not answer (refused, timed out, unreachable): the robot is down or off the LAN. */
export class RobotUnreachableError extends Error {
  override name = 'RobotUnreachableError';
}

/** The robot's credential reference cannot be used (missing variable or key file) or was refused by the robot. */
export class RobotCredentialError extends Error {
  override name = 'RobotCredentialError';
}

export const fingerprint = (keyBlob: Buffer): string =>
  'SHA256:' + crypto.createHash('sha256').update(keyBlob).digest('base64').replace(/=+$/, '');

const UNREACHABLE = new Set(['ECONNREFUSED', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN', 'ECONNRESET', 'ENOTFOUND', 'EAI_AGAIN']);

/**
 * A credential reference as stored in the offline app (`env:<VARNAME>` or `key:<private key file>`), turned into
 * the target's fields. The reference, never the secret, is what a database or a workflow holds.
 */
export function credentialFromRef(robotId: string, ref: string): Pick<RobotSshTarget, 'passwordEnv' | 'privateKeyFile'> {
  const m = /^(env|key):(.+)$/.exec(ref);
  if (!m) throw new RobotCredentialError(`robot ${robotId}: credential_ref must be env:<VARNAME> or key:<file>`);
  return m[1] === 'env' ? { passwordEnv: m[2] } : { privateKeyFile: m[2] };
}

function authOptions(target: RobotSshTarget, env: NodeJS.ProcessEnv): Pick<ConnectConfig, 'password' | 'privateKey'> {
  if (target.passwordEnv) {
    const password = env[target.passwordEnv];
    if (!password) throw new RobotCredentialError(`robot ${target.robotId}: environment variable ${target.passwordEnv} (its SSH password) is not set`);
    return { password };
  }
  if (target.privateKeyFile) {
    try {
      return { privateKey: fs.readFileSync(target.privateKeyFile) };
    } catch (e) {
      throw new RobotCredentialError(`robot ${target.robotId}: cannot read key file ${target.privateKeyFile}: ${(e as Error).message}`);
    }
  }
  throw new RobotCredentialError(`robot ${target.robotId}: no credential (key file or password variable)`);
}

/**
 * Coalesces the socket writes made within one tick into one `writev`: ssh2 writes every SSH packet (32 KiB at
 * most, the robot's sshd limit) with its own `write`, so a burst of SFTP requests costs one syscall and one TCP
 * segment each (Nagle is off). Corked until the end of the tick, they leave together; nothing waits longer.
 */
export function coalesceWrites(sock: net.Socket): void {
  const write = sock.write.bind(sock) as (...args: unknown[]) => boolean;
  let corked = false;
  const uncork = () => {
    corked = false;
    sock.uncork();
  };
  sock.write = ((...args: unknown[]) => {
    if (!corked) {
      corked = true;
      sock.cork();
      process.nextTick(uncork);
    }
    return write(...args);
  }) as typeof sock.write;
}

const hostKeys = new WeakMap<Client, Buffer>();

/** The host key blob a connected client verified (what an OpenSSH child is told to expect; see openssh-put.ts). */
export const verifiedHostKey = (client: Client): Buffer | undefined => hostKeys.get(client);

export interface ConnectOptions {
  readyTimeoutMs?: number;
  /** Where the password variable is read (tests pass their own). */
  env?: NodeJS.ProcessEnv;
}

/**
 * Connects with the host key checked against `expected`; `null` means first contact: any key is accepted and
 * returned so the caller can pin it. Errors are classified: host key mismatch, unreachable, credential.
 */
export function connectWithHostKey(
  target: Omit<RobotSshTarget, 'hostKeySha256'>,
  expected: string | null,
  opts: ConnectOptions = {},
): Promise<{ client: Client; hostKeySha256: string }> {
  return new Promise((resolve, reject) => {
    let auth: ReturnType<typeof authOptions>;
    try {
      auth = authOptions(target as RobotSshTarget, opts.env ?? process.env);
    } catch (e) {
      return reject(e);
    }
    const client = new Client();
    // Our own socket (ssh2's `sock` option): Nagle off (with it SFTP drops to a few MiB/s on loopback,
    // STACK.md) and the writes of one tick coalesced.
    const sock = net.connect({ host: target.host, port: target.port });
    sock.setNoDelay(true);
    coalesceWrites(sock);
    let seen: string | null = null;
    client
      .on('ready', () => resolve({ client, hostKeySha256: seen! }))
      .on('error', (err: Error & { code?: string; level?: string }) => {
        client.end();
        if (expected && seen && seen !== expected) {
          reject(new HostKeyMismatchError(`host key mismatch: ${target.robotId} presented ${seen}, pinned ${expected}`));
        } else if ((err.code && UNREACHABLE.has(err.code)) || /Timed out while waiting for handshake/.test(err.message)) {
          reject(new RobotUnreachableError(`robot ${target.robotId} unreachable at ${target.host}:${target.port}: ${err.code ?? err.message}`));
        } else if (err.level === 'client-authentication') {
          reject(new RobotCredentialError(`robot ${target.robotId}: authentication refused for user ${target.username}`));
        } else {
          reject(err);
        }
      })
      .connect({
        sock,
        host: target.host,
        port: target.port,
        username: target.username,
        ...auth,
        readyTimeout: opts.readyTimeoutMs ?? 10000,
        hostVerifier: (key: Buffer) => {
          seen = fingerprint(key);
          hostKeys.set(client, key);
          return expected === null || seen === expected;
        },
      });
  });
}

export async function connectRobot(target: RobotSshTarget, readyTimeoutMs = 10000): Promise<Client> {
  return (await connectWithHostKey(target, target.hostKeySha256, { readyTimeoutMs })).client;
}

export function exec(client: Client, command: string, stdin?: Buffer | string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    client.exec(command, (err, stream) => {
      if (err) return reject(err);
      let stdout = '';
      let stderr = '';
      stream.on('data', (d: Buffer) => (stdout += d.toString()));
      stream.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      stream.on('close', (code: number | null) => resolve({ code: code ?? -1, stdout, stderr }));
      if (stdin !== undefined) stream.end(stdin);
    });
  });
}

/** What coalesceSftpRequests reaches inside ssh2's SFTPWrapper (ssh2 1.x, lib/protocol/SFTP.js). */
interface SftpInternals {
  _protocol?: { channelData(id: number, data: Buffer): void; channelClose(id: number): void };
  outgoing?: { id: number; packetSize: number };
}

/**
 * Packs the SFTP requests of one tick into as few SSH packets as fit: ssh2 sends every request (an open, a
 * close, a rename, an 8 KiB write) as its own CHANNEL_DATA packet, and each costs the robot's sshd a decrypt, a
 * MAC check and a dispatch, and us an encrypt. SFTP is a byte stream over its channel, so requests may share a
 * packet; their order, the channel's window (ssh2 counted it per request already) and the packet size limit stay
 * as they were. A payload of a full packet (a large write's slices) passes on as it is, without a copy. Nothing
 * waits longer than the end of the tick; a close sends what is pending first.
 */
export function coalesceSftpRequests(s: SFTPWrapper): SFTPWrapper {
  const inner = s as unknown as SftpInternals;
  const real = inner._protocol;
  const out = inner.outgoing;
  if (!real || typeof real.channelData !== 'function' || typeof real.channelClose !== 'function' || !out) return s; // another ssh2: as it is
  let pending: Buffer[] = [];
  let scheduled = false;
  const flush = () => {
    scheduled = false;
    const queue = pending;
    pending = [];
    let packet: Buffer[] = [];
    let size = 0;
    const send = () => {
      if (packet.length > 0) real.channelData(out.id, packet.length === 1 ? packet[0] : Buffer.concat(packet, size));
      packet = [];
      size = 0;
    };
    for (const b of queue) {
      if (size + b.length > out.packetSize) send();
      packet.push(b);
      size += b.length;
    }
    send();
  };
  inner._protocol = {
    channelData(id: number, data: Buffer) {
      if (id !== out.id) return real.channelData(id, data);
      pending.push(data);
      if (!scheduled) {
        scheduled = true;
        process.nextTick(flush);
      }
    },
    channelClose(id: number) {
      if (pending.length > 0) flush();
      real.channelClose(id);
    },
  };
  return s;
}

export function sftp(client: Client): Promise<SFTPWrapper> {
  return new Promise((resolve, reject) => client.sftp((err, s) => (err ? reject(err) : resolve(coalesceSftpRequests(s)))));
}

/** Single-quotes a string for a POSIX shell. */
export const shq = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
