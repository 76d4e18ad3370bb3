// A bulk transport for large RFs: the system's OpenSSH `ssh` client as child processes, their stdin the RF itself,
// running `dd` on the robot into the part. On a small CPU-bound center computer our Node/ssh2 client spends 2-3x
// the CPU per byte of OpenSSH's C client (GC, per-packet JS work, copies), and aes128-gcm costs the robot's sshd
// less than the default chacha20. A plain channel into `dd` rather than an `sftp` put: no SFTP request/reply per
// 255 KiB on either end and no sftp process on the center (measured on 512 MiB: client CPU 0.7 s against 1.1 s
// for `sftp -B 255k -R 64`, robot 1.4 s against 1.8 s). One stream is bound by one core on each end (its cipher,
// its sshd, its dd), so a file is sent as parallel streams on disjoint byte ranges of the same part (`seek=`,
// `conv=notrunc`), each resumable from its own offset (dd's `status=progress` reports what it wrote; the part is
// sparse meanwhile, so its size says nothing). Everything else stays on the ssh2 session the caller holds: the
// host key it verified (written to a temporary known_hosts so the child refuses any other key), the part's
// truncation, periodic and final fsync, and posix-rename onto the target (no partial file at a target path; the
// newer rename wins).
// The children never outlive the worker: `setpriv --pdeathsig SIGKILL` kills them when the worker dies, so a
// retry is never a second writer of the same part; the activity's cancellation (heartbeat timeout, cancel), or
// one stream failing, kills them too.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { SFTPWrapper, Stats } from 'ssh2';
import { HostKeyMismatchError, RobotCredentialError, type RobotSshTarget } from './connect';
import { uploadPartPath, type ResumePoint, type UploadItem, type UploadResult } from './sftp-upload';

/** The ssh askpass helper: prints FLEETSYNC_ROBOT_SSH_PASSWORD from its own environment. */
export const ASKPASS = path.join(__dirname, 'askpass.sh');
const PASSWORD_ENV = 'FLEETSYNC_ROBOT_SSH_PASSWORD';
/** aes128-gcm first (AES-NI: cheapest for both ends), chacha20 if the robot refuses it. */
const CIPHERS = 'aes128-gcm@openssh.com,chacha20-poly1305@openssh.com';
/** dd's block size on the robot: a resumed write starts at a multiple of it (`seek=` counts blocks). */
export const DD_BLOCK = 1024 * 1024;

let availability: string | null | undefined;

/** Why the OpenSSH transport cannot be used here (null: it can). Checked once per process. */
export function opensshUnavailable(): string | null {
  if (availability !== undefined) return availability;
  availability = null;
  for (const [bin, args] of [['ssh', ['-V']], ['setpriv', ['--help']]] as const) {
    const r = spawnSync(bin, args, { stdio: 'ignore' });
    if (r.error) availability = `${bin} not found (${(r.error as NodeJS.ErrnoException).code})`;
  }
  if (availability === null && !fs.existsSync(ASKPASS)) availability = `${ASKPASS} is missing`;
  return availability;
}

/** A known_hosts line for the key blob ssh2 verified (its first field is the key type). */
export function knownHostsLine(alias: string, hostKey: Buffer): string {
  const type = hostKey.subarray(4, 4 + hostKey.readUInt32BE(0)).toString('latin1');
  return `${alias} ${type} ${hostKey.toString('base64')}\n`;
}

/** A POSIX shell word: single quotes, an embedded quote as '\''. */
const sq = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** Paces a stream to `bytesPerSec` (tests: so a process can be killed while bytes flow). */
function paced(bytesPerSec: number): Transform {
  const t0 = Date.now();
  let sent = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      sent += chunk.length;
      const wait = t0 + (sent / bytesPerSec) * 1000 - Date.now();
      setTimeout(() => done(null, chunk), Math.max(0, wait));
    },
  });
}

export interface OpensshPutOptions {
  target: Pick<RobotSshTarget, 'robotId' | 'host' | 'port' | 'username' | 'passwordEnv' | 'privateKeyFile'>;
  /** The host key blob the ssh2 session verified against the pinned fingerprint. */
  hostKey: Buffer;
  localPath: string;
  remotePath: string;
  /**
   * Where the write starts, in both files (a multiple of DD_BLOCK): the remote file is cut there (dd's `seek=`
   * without `notrunc`) and the local file is read from there.
   */
  offset: number;
  /** Bytes to send from `offset` (default: to the end of the local file). */
  length?: number;
  /**
   * Leave the remote file as it is around the written bytes (dd's `conv=notrunc`): ranges of one part written by
   * parallel streams. Without it the part is cut at `offset`.
   */
  notrunc?: boolean;
  /** fsync the remote file before dd exits (default true; a caller flushing the whole part once says false). */
  fsync?: boolean;
  /**
   * dd writes with O_DIRECT (`oflag=direct`; GNU dd writes an unaligned last block buffered): no copy into the
   * robot's page cache and no writeback of it later, so less of the robot's CPU per byte.
   */
  directIo?: boolean;
  /** Bytes dd has written so far (its `status=progress` lines, about once a second, and its final count). */
  onWritten?: (bytes: number) => void;
  /** Kbit/s (tests slow the upload down so a process can be killed in the middle). */
  limitKbitPerSec?: number;
  signal?: AbortSignal;
  /** Where the password variable is read. */
  env?: NodeJS.ProcessEnv;
  onSpawn?: (pid: number) => void;
}

/**
 * Writes `localPath` from `offset` (`length` bytes, default to its end) to `remotePath` from the same offset
 * through one `ssh <robot> dd` (fsync'ed before dd exits unless `fsync: false`); rejects on any failure.
 */
export async function opensshPut(o: OpensshPutOptions): Promise<void> {
  if (o.offset % DD_BLOCK !== 0) throw new Error(`opensshPut: offset ${o.offset} is not a multiple of ${DD_BLOCK}`);
  const env = o.env ?? process.env;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fleetsync-ssh-'));
  const knownHosts = path.join(tmp, 'known_hosts');
  const alias = `fleetsync-robot-${o.target.robotId}`;
  fs.writeFileSync(knownHosts, knownHostsLine(alias, o.hostKey), { mode: 0o600 });
  const childEnv: NodeJS.ProcessEnv = { PATH: env.PATH ?? process.env.PATH, HOME: tmp, LANG: 'C' };
  const auth: string[] = [];
  if (o.target.privateKeyFile) {
    auth.push('-i', o.target.privateKeyFile, '-o', 'IdentitiesOnly=yes', '-o', 'PasswordAuthentication=no', '-o', 'KbdInteractiveAuthentication=no');
  } else if (o.target.passwordEnv) {
    const password = env[o.target.passwordEnv];
    if (!password) throw new RobotCredentialError(`robot ${o.target.robotId}: environment variable ${o.target.passwordEnv} (its SSH password) is not set`);
    // The password only in the child's environment: ssh runs the askpass helper, which prints it.
    Object.assign(childEnv, { SSH_ASKPASS: ASKPASS, SSH_ASKPASS_REQUIRE: 'force', [PASSWORD_ENV]: password });
    auth.push('-o', 'PubkeyAuthentication=no', '-o', 'PreferredAuthentications=password,keyboard-interactive', '-o', 'NumberOfPasswordPrompts=1');
  }
  // dd, not cat: 1 MiB reads and writes on the robot (fewer system calls), a start offset (`seek=`, which
  // also cuts off whatever the part held past it unless notrunc) and one fsync of the part before it exits.
  // status=progress: dd reports what it has written (the confirmed offset of a range, whose part is sparse).
  const conv = [o.notrunc ? 'notrunc' : '', o.fsync === false ? '' : 'fsync'].filter(Boolean).join(',');
  // A bounded write stops after its bytes (`count=`): ssh may be reading the whole rest of the file (below).
  const count = o.length === undefined ? '' : ` iflag=fullblock,count_bytes count=${o.length}`;
  const oflag = o.directIo ? ' oflag=direct' : '';
  const remote = `LC_ALL=C dd of=${sq(o.remotePath)} bs=${DD_BLOCK} seek=${o.offset / DD_BLOCK}${count}${oflag}${conv ? ` conv=${conv}` : ''} status=progress`;
  const args = [
    '--pdeathsig', 'SIGKILL', '--',
    'ssh', '-F', '/dev/null', '-T', '-e', 'none', '-x', '-a',
    '-o', `BatchMode=${o.target.passwordEnv && !o.target.privateKeyFile ? 'no' : 'yes'}`,
    '-p', String(o.target.port), '-c', CIPHERS, '-o', 'Compression=no',
    '-o', 'StrictHostKeyChecking=yes', '-o', `UserKnownHostsFile=${knownHosts}`, '-o', 'GlobalKnownHostsFile=/dev/null',
    '-o', `HostKeyAlias=${alias}`, '-o', 'CheckHostIP=no', '-o', 'UpdateHostKeys=no',
    '-o', 'ConnectTimeout=10', '-o', 'ServerAliveInterval=5', '-o', 'ServerAliveCountMax=3',
    '-o', 'ControlMaster=no', '-o', 'ControlPath=none', '-o', `User=${o.target.username}`,
    ...auth,
    o.target.host,
    remote,
  ];
  // At full speed ssh reads the file itself (no copy through this process): its stdin is the file, positioned at
  // the offset by a `dd skip=` that copies nothing (Node has no lseek; the position belongs to the open file,
  // which both share). A bounded range ends on the robot (dd's `count=`); what ssh read past it is discarded
  // when dd exits (at most a channel window). A paced write (tests) is streamed from here, exactly its bytes.
  const end = o.length === undefined ? fs.statSync(o.localPath).size : o.offset + o.length;
  const direct = !o.limitKbitPerSec;
  const fd = direct ? fs.openSync(o.localPath, 'r') : null;
  if (fd !== null && o.offset > 0) {
    const r = spawnSync('dd', [`skip=${o.offset}`, 'iflag=skip_bytes', 'count=0', 'status=none'], { stdio: [fd, 'ignore', 'pipe'] });
    if (r.status !== 0) {
      fs.closeSync(fd);
      throw new Error(`positioning ${o.localPath} at ${o.offset} failed: ${String(r.stderr ?? r.error)}`);
    }
  }
  try {
    await new Promise<void>((resolve, reject) => {
      const child = spawn('setpriv', args, { env: childEnv, stdio: [fd ?? 'pipe', 'ignore', 'pipe'] });
      if (fd !== null) fs.closeSync(fd);
      if (child.pid) o.onSpawn?.(child.pid);
      let stderr = '';
      let line = '';
      child.stderr!.on('data', (d: Buffer) => {
        // dd's progress lines end in \r, its final count in \n; anything else is kept for the error message.
        const parts = (line + d.toString()).split(/[\r\n]/);
        line = parts.pop()!;
        for (const l of parts) {
          const m = /^(\d+) bytes\b.* copied/.exec(l);
          if (m) o.onWritten?.(Number(m[1]));
          else if (l.trim() && !/^\d+\+\d+ records (in|out)$/.test(l)) stderr = (stderr + l + '\n').slice(-4000);
        }
      });
      let fed: Promise<void> = Promise.resolve();
      if (child.stdin) {
        const from: Readable = fs.createReadStream(o.localPath, { start: o.offset, end: Math.max(o.offset, end - 1), highWaterMark: DD_BLOCK });
        fed = o.limitKbitPerSec ? pipeline(from, paced((o.limitKbitPerSec * 1000) / 8), child.stdin) : pipeline(from, child.stdin);
        fed.catch(() => undefined); // a dead child is reported by its exit below; a local read error, too
      }
      const abort = () => child.kill('SIGKILL');
      o.signal?.addEventListener('abort', abort, { once: true });
      child.on('error', reject);
      child.on('close', (code, sig) => {
        o.signal?.removeEventListener('abort', abort);
        stderr += line;
        const msg = stderr.trim().split('\n').slice(-5).join('; ');
        if (code === 0) return fed.then(resolve, (e: unknown) => reject(new Error(`ssh upload to robot ${o.target.robotId}: reading ${o.localPath} failed: ${String(e)}`)));
        if (/HOST IDENTIFICATION HAS CHANGED|Host key verification failed/.test(stderr)) {
          return reject(new HostKeyMismatchError(`host key mismatch: ${o.target.robotId} (OpenSSH ssh refused its host key)`));
        }
        if (/: Permission denied \(/.test(stderr)) return reject(new RobotCredentialError(`robot ${o.target.robotId}: authentication refused for user ${o.target.username}`));
        reject(new Error(`ssh upload to robot ${o.target.robotId} failed (${sig ?? `exit ${code}`}): ${msg}`));
      });
    });
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

const cb = <T = void>(fn: (done: (err: Error | null | undefined, v?: T) => void) => void) =>
  new Promise<T>((resolve, reject) => fn((err, v) => (err ? reject(err) : resolve(v as T))));

async function remoteSize(s: SFTPWrapper, p: string): Promise<number | null> {
  try {
    return (await cb<Stats>((d) => s.stat(p, d))).size;
  } catch {
    return null;
  }
}

export interface LargeUploadOptions extends Omit<OpensshPutOptions, 'localPath' | 'remotePath' | 'offset' | 'length' | 'notrunc' | 'fsync' | 'onWritten' | 'onSpawn'> {

  resume?: ResumePoint | null;
  onProgress?: (p: { bytes: number; resume: ResumePoint }) => void;
  /** Parallel ssh streams, each on its own byte range of the part (default 2; 1 for a file under 2 blocks). */
  streams?: number;
  /** Each stream's child pid as it starts (tests kill them). */
  onSpawn?: (pid: number, range: number) => void;
  /**
   * Bytes between two fsyncs of the part while dd writes it (over `s`, one at a time; 0: none): the robot's
   * disk writes behind the network, so the final fsync before the rename only flushes the tail. Default 64 MiB.
   */
  flushEveryBytes?: number;
}

/** `n` ranges of about equal size, every boundary a multiple of DD_BLOCK (dd's `seek=` counts blocks). */
export function splitRanges(size: number, n: number): Array<{ from: number; to: number }> {
  const blocks = Math.ceil(size / DD_BLOCK);
  const k = Math.max(1, Math.min(n, blocks));
  return Array.from({ length: k }, (_, i) => ({
    from: Math.min(size, Math.floor((blocks * i) / k) * DD_BLOCK),
    to: i === k - 1 ? size : Math.floor((blocks * (i + 1)) / k) * DD_BLOCK,
  }));
}

/**
 * Where each range starts again: what a previous attempt of the same content confirmed, rounded down to dd's
 * block, never past what the robot holds (a part shorter than a confirmed byte was cut by someone: start over).
 * A point from a single-stream attempt (`offset` only) counts as that prefix of the file.
 */
function resumeAt(ranges: Array<{ from: number; to: number }>, r: ResumePoint | null | undefined, item: UploadItem, have: number | null): number[] {
  const fresh = ranges.map((x) => x.from);
  if (!r || r.remotePath !== item.remotePath || r.sha256 !== item.sha256 || have === null) return fresh;
  const confirmed = r.ranges ?? [{ from: 0, to: item.size, at: r.offset }];
  const at = ranges.map((x) => {
    // Bytes of [x.from, x.to) the previous attempt confirmed contiguously from x.from.
    let upTo = x.from;
    for (const c of confirmed) if (c.from <= upTo && c.at > upTo) upTo = Math.min(c.at, x.to);
    return upTo;
  });
  if (Math.max(...confirmed.map((c) => c.at)) > have) return fresh;
  return at.map((a, i) => (a >= ranges[i].to ? a : Math.max(ranges[i].from, a - (a % DD_BLOCK))));
}

/**
 * One large file through parallel `ssh <robot> dd` streams, each writing its own byte range of the part
 * (`seek=`, `conv=notrunc`): one stream is bound by one core's cipher and one sshd; two use both ends' cores. A
 * retry resumes every range from the previous attempt's point (the heartbeat carries each range's offset, as dd
 * reports it written; rounded down to dd's block) and sends only what each lacks. The part is fsynced every
 * `flushEveryBytes` meanwhile over the ssh2 session (the disk keeps up with the network: measured 10-20% less
 * wall time for 512 MiB than one fsync at the end), then once at the end, then renamed onto the target.
 */
export async function uploadLargeWithOpenssh(s: SFTPWrapper, item: UploadItem, o: LargeUploadOptions): Promise<UploadResult> {
  const part = uploadPartPath(item.remotePath);
  const result: UploadResult = { files: 0, bytesSent: 0, bytesInstalled: 0, resumedFrom: 0, failed: [] };
  const ranges = splitRanges(item.size, o.streams ?? 2);
  const r = o.resume;
  const usable = !!r && r.remotePath === item.remotePath && r.sha256 === item.sha256 && (r.offset > 0 || (r.ranges ?? []).some((x) => x.at > x.from));
  const starts = resumeAt(ranges, usable ? r : null, item, usable ? await remoteSize(s, part) : null);
  const point: ResumePoint & { ranges: Array<{ from: number; to: number; at: number }> } = {
    remotePath: item.remotePath,
    sha256: item.sha256,
    offset: starts[0],
    ranges: ranges.map((x, i) => ({ ...x, at: starts[i] })),
  };
  result.resumedRanges = ranges.map((x, i) => starts[i] - x.from);
  result.resumedFrom = result.resumedRanges.reduce((n, x) => n + x, 0);
  const sent = () => point.ranges.reduce((n, x, i) => n + x.at - starts[i], 0);
  o.onProgress?.({ bytes: 0, resume: point });
  if (result.resumedFrom === 0) {
    // A fresh part: whatever an older attempt (of other content) left there is cut off first, since the ranges
    // write without truncating.
    const h = await cb<Buffer>((d) => s.open(part, 'w', d));
    await cb((d) => s.close(h, d));
  }
  const every = o.flushEveryBytes ?? 64 * 1024 * 1024;
  let nextFlush = every;
  let flushHandle: Buffer | null = null;
  let flushing: Promise<void> | null = null;
  const flushPart = async () => {
    flushHandle ??= await cb<Buffer>((d) => s.open(part, 'r', d));
    await cb((d) => s.ext_openssh_fsync(flushHandle!, d));
  };
  const onWritten = (i: number, from: number, bytes: number) => {
    const at = Math.min(point.ranges[i].to, from + bytes);
    if (at <= point.ranges[i].at) return;
    point.ranges[i].at = at;
    point.offset = point.ranges[0].at;
    o.onProgress?.({ bytes: sent(), resume: point });
    if (every > 0 && !flushing && sent() >= nextFlush && sent() < item.size - result.resumedFrom) {
      nextFlush = sent() + every;
      flushing = flushPart()
        .catch(() => undefined) // only an optimisation: the fsync before the rename is what counts
        .finally(() => (flushing = null));
    }
  };
  // Every stream is stopped when one fails: a retry resumes them all from their heartbeated points.
  const abort = () => stop?.abort();
  let stop: AbortController | null = null;
  o.signal?.addEventListener('abort', abort, { once: true });
  /** The streams, settled, not raced: a retry must never find a stream of this attempt still writing the part. */
  const send = async (directIo: boolean): Promise<unknown[]> => {
    const ctl = (stop = new AbortController());
    if (o.signal?.aborted) ctl.abort();
    const streams = await Promise.allSettled(
      ranges.map(async (x, i) => {
        if (point.ranges[i].at >= x.to) return;
        const from = point.ranges[i].at - (point.ranges[i].at % DD_BLOCK);
        try {
          await opensshPut({
            ...o,
            signal: ctl.signal,
            localPath: item.localPath,
            remotePath: part,
            offset: from,
            length: x.to - from,
            notrunc: true,
            fsync: false,
            directIo,
            onWritten: (b) => onWritten(i, from, b),
            onSpawn: (pid) => o.onSpawn?.(pid, i),
          });
        } catch (e) {
          ctl.abort();
          throw e;
        }
      }),
    );
    return streams.filter((x): x is PromiseRejectedResult => x.status === 'rejected').map((x) => x.reason as unknown);
  };
  try {
    let failed = await send(o.directIo ?? true);
    // A filesystem without O_DIRECT (tmpfs...) refuses dd's open before a byte is written: buffered writes then.
    if (failed.length && (o.directIo ?? true) && failed.every((e) => /Invalid argument/.test(String(e)))) failed = await send(false);
    if (failed.length) throw failed[0];
    await flushing;
    await flushPart();
  } finally {
    o.signal?.removeEventListener('abort', abort);
    await flushing;
    if (flushHandle) await cb((d) => s.close(flushHandle!, d)).catch(() => undefined);
  }
  const size = await remoteSize(s, part);
  if (size !== item.size) throw new Error(`ssh upload of ${item.remotePath}: part holds ${size} bytes, expected ${item.size}`);
  for (const x of point.ranges) x.at = x.to;
  point.offset = point.ranges[0].at;
  result.bytesSent = item.size - result.resumedFrom;
  o.onProgress?.({ bytes: result.bytesSent, resume: point });
  await cb((d) => s.ext_openssh_rename(part, item.remotePath, d));
  result.files = 1;
  result.bytesInstalled = item.size;
  return result;
}
