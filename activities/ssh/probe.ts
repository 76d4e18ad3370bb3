// Stack probe, SSH part: run a command on a robot and upload a file over SFTP with the robot's host key
// pinned, through the robot upload engine (sftp-upload.ts) every robot upload uses: `<name>.part` written at
// explicit offsets, the confirmed offset heartbeated (a retried attempt continues from it instead of starting
// over), fsync, then an atomic posix-rename onto the final name.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Context, activityInfo } from '@temporalio/activity';
import type { RobotDirectory } from '../../common/robot-directory';
import { connectRobot, exec, sftp, shq } from './connect';
import { ensureRemoteDirs, uploadFiles, type ResumePoint } from './sftp-upload';

export interface SshProbeInput {
  probeId: string;
  robotId: string;
  bytes: number;
  /** Slows the upload down so a test can kill the worker in the middle of it (0 = full speed). */
  throttleBytesPerSec?: number;
}

export interface SshProbeResult {
  attempt: number;
  uname: string;
  remotePath: string;
  resumedFrom: number;
  sha256: string;
  remoteSha256: string;
}

const CHUNK = 256 * 1024;

/** Deterministic probe content: byte at offset o depends only on (probeId, o), so any range can be regenerated. */
export function probeBytes(probeId: string, offset: number, length: number): Buffer {
  const pattern = Buffer.concat(
    Array.from({ length: 2048 }, (_, i) => crypto.createHash('sha256').update(`${probeId}:${i}`).digest()),
  ); // 64 KiB
  const out = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) out[i] = pattern[(offset + i) % pattern.length];
  return out;
}

/** Writes the probe's content to a local file (deterministic: a retried attempt regenerates the same bytes). */
function probeFile(probeId: string, bytes: number): string {
  const file = path.join(os.tmpdir(), `fleetsync-probe-${probeId}.bin`);
  const fd = fs.openSync(file, 'w');
  try {
    for (let o = 0; o < bytes; o += CHUNK) fs.writeSync(fd, probeBytes(probeId, o, Math.min(CHUNK, bytes - o)));
  } finally {
    fs.closeSync(fd);
  }
  return file;
}

export function createSshProbeActivities(robots: RobotDirectory) {
  return {
    async probeSshUpload(input: SshProbeInput): Promise<SshProbeResult> {
      const target = robots.ssh(input.robotId);
      const client = await connectRobot(target);
      const local = probeFile(input.probeId, input.bytes);
      try {
        const uname = await exec(client, 'uname -sr');
        if (uname.code !== 0) throw new Error(`uname failed: ${uname.stderr}`);
        const finalPath = `${target.root}/probes/${input.probeId}.bin`;
        const sha256 = crypto.createHash('sha256').update(fs.readFileSync(local)).digest('hex');
        await ensureRemoteDirs(client, [finalPath]);
        const s = await sftp(client);
        // The robot upload engine: resumes from what the previous attempt confirmed (its last heartbeat).
        const resume = (Context.current().info.heartbeatDetails as { resume?: ResumePoint | null } | undefined)?.resume ?? null;
        const up = await uploadFiles(s, [{ localPath: local, remotePath: finalPath, size: input.bytes, sha256 }], {
          resume,
          resumableFrom: 0,
          throttleBytesPerSec: input.throttleBytesPerSec,
          onProgress: (p) => Context.current().heartbeat({ resume: p.resume }),
        });
        s.end();
        if (up.failed.length) throw new Error(`upload failed: ${up.failed[0].error}`);

        const sum = await exec(client, `sha256sum ${shq(finalPath)}`);
        if (sum.code !== 0) throw new Error(`sha256sum failed: ${sum.stderr}`);
        return {
          attempt: activityInfo().attempt,
          uname: uname.stdout.trim(),
          remotePath: finalPath,
          resumedFrom: up.resumedFrom,
          sha256,
          remoteSha256: sum.stdout.split(/\s+/)[0],
        };
      } finally {
        client.end();
        fs.rmSync(local, { force: true });
      }
    },
  };
}
