// Stack probe, SSH part: run a command on a robot and upload a file over SFTP with the robot's host key
// pinned. The upload is resumable and idempotent, the way every robot upload in this project works:
// `<name>.part` written at explicit offsets, the confirmed offset heartbeated (a retried attempt continues
// from it instead of starting over), fsync, then an atomic posix-rename onto the final name.
import crypto from 'node:crypto';
import { Context, activityInfo } from '@temporalio/activity';
import type { SFTPWrapper } from 'ssh2';
import type { RobotDirectory } from '../../common/robot-directory';
import { connectRobot, exec, sftp, shq } from './connect';

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

const p = <T>(fn: (cb: (err: Error | null | undefined, v: T) => void) => void) =>
  new Promise<T>((resolve, reject) => fn((err, v) => (err ? reject(err) : resolve(v))));

async function remoteSize(s: SFTPWrapper, file: string): Promise<number> {
  try {
    return (await p<{ size: number }>((cb) => s.stat(file, cb))).size;
  } catch {
    return 0;
  }
}

export function createSshProbeActivities(robots: RobotDirectory) {
  return {
    async probeSshUpload(input: SshProbeInput): Promise<SshProbeResult> {
      const target = robots.ssh(input.robotId);
      const client = await connectRobot(target);
      try {
        const uname = await exec(client, 'uname -sr');
        if (uname.code !== 0) throw new Error(`uname failed: ${uname.stderr}`);
        const dir = `${target.root}/probes`;
        const finalPath = `${dir}/${input.probeId}.bin`;
        const partPath = `${finalPath}.part`;
        const mk = await exec(client, `mkdir -p ${shq(dir)}`);
        if (mk.code !== 0) throw new Error(`mkdir failed: ${mk.stderr}`);
        const s = await sftp(client);

        // Resume from what the previous attempt confirmed, never past what the robot actually holds.
        const confirmed = (Context.current().info.heartbeatDetails as { offset?: number } | undefined)?.offset ?? 0;
        const resumedFrom = Math.min(confirmed, await remoteSize(s, partPath));
        const handle = await p<Buffer>((cb) => s.open(partPath, resumedFrom > 0 ? 'r+' : 'w', cb));
        const started = Date.now();
        for (let offset = resumedFrom; offset < input.bytes; ) {
          const n = Math.min(CHUNK, input.bytes - offset);
          const chunk = probeBytes(input.probeId, offset, n);
          await p<void>((cb) => s.write(handle, chunk, 0, n, offset, (err) => cb(err, undefined)));
          offset += n;
          Context.current().heartbeat({ offset });
          if (input.throttleBytesPerSec) {
            const due = started + ((offset - resumedFrom) / input.throttleBytesPerSec) * 1000;
            await Context.current().sleep(Math.max(0, due - Date.now()));
          }
        }
        await p<void>((cb) => s.ext_openssh_fsync(handle, (err) => cb(err ?? null, undefined)));
        await p<void>((cb) => s.close(handle, (err) => cb(err, undefined)));
        await p<void>((cb) => s.ext_openssh_rename(partPath, finalPath, (err) => cb(err ?? null, undefined)));
        s.end();

        const sum = await exec(client, `sha256sum ${shq(finalPath)}`);
        if (sum.code !== 0) throw new Error(`sha256sum failed: ${sum.stderr}`);
        const local = crypto.createHash('sha256');
        for (let o = 0; o < input.bytes; o += CHUNK) local.update(probeBytes(input.probeId, o, Math.min(CHUNK, input.bytes - o)));
        return {
          attempt: activityInfo().attempt,
          uname: uname.stdout.trim(),
          remotePath: finalPath,
          resumedFrom,
          sha256: local.digest('hex'),
          remoteSha256: sum.stdout.split(/\s+/)[0],
        };
      } finally {
        client.end();
      }
    },
  };
}
