// SSH to a robot with its host key pinned: ssh2 accepts any host key unless told otherwise, so every
// connection compares the server's key with the fingerprint recorded for that robot and refuses a mismatch.
import crypto from 'node:crypto';
import fs from 'node:fs';
import { Client, type SFTPWrapper } from 'ssh2';
import type { RobotSshTarget } from '../../common/robot-directory';

export type { RobotSshTarget };

export class HostKeyMismatchError extends Error {
  override name = 'HostKeyMismatchError';
}

export const fingerprint = (keyBlob: Buffer): string =>
  'SHA256:' + crypto.createHash('sha256').update(keyBlob).digest('base64').replace(/=+$/, '');

export function connectRobot(target: RobotSshTarget, readyTimeoutMs = 10000): Promise<Client> {
  return new Promise((resolve, reject) => {
    const client = new Client();
    let seen: string | null = null;
    client
      .on('ready', () => {
        // Nagle on: SFTP throughput drops to a few MiB/s on loopback (STACK.md).
        (client as unknown as { setNoDelay?: (v: boolean) => void }).setNoDelay?.(true);
        resolve(client);
      })
      .on('error', (err) => {
        client.end();
        reject(
          seen && seen !== target.hostKeySha256
            ? new HostKeyMismatchError(`host key of ${target.robotId} is ${seen}, expected ${target.hostKeySha256}`)
            : err,
        );
      })
      .connect({
        host: target.host,
        port: target.port,
        username: target.username,
        privateKey: fs.readFileSync(target.privateKeyFile),
        readyTimeout: readyTimeoutMs,
        hostVerifier: (key: Buffer) => {
          seen = fingerprint(key);
          return seen === target.hostKeySha256;
        },
      });
  });
}

export function exec(client: Client, command: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    client.exec(command, (err, stream) => {
      if (err) return reject(err);
      let stdout = '';
      let stderr = '';
      stream.on('data', (d: Buffer) => (stdout += d.toString()));
      stream.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      stream.on('close', (code: number | null) => resolve({ code: code ?? -1, stdout, stderr }));
    });
  });
}

export function sftp(client: Client): Promise<SFTPWrapper> {
  return new Promise((resolve, reject) => client.sftp((err, s) => (err ? reject(err) : resolve(s))));
}

/** Single-quotes a string for a POSIX shell. */
export const shq = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
