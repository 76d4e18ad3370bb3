// The robot upload engine: many files, one SFTP session, many writes in flight. Every file is written to
// `<target>.robot-sync.part` at explicit offsets, fsynced (ext_openssh_fsync) and moved onto its name with
// ext_openssh_rename (POSIX rename: atomic, replaces an existing file), so a target path only ever holds a
// whole old or a whole new file — also when an OTA deploy writes the same path (it renames too; the later
// rename wins). Small files are pipelined (many files open at once: the wire never waits on one file's round
// trips); a large file has many chunks in flight. A large file resumes from its confirmed offset: the
// caller persists `resume` points (activity heartbeat) and passes the last one back on a retry.
import fsSync from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Client, SFTPWrapper, Stats } from 'ssh2';
import { exec, shq } from './connect';

export interface UploadItem {
  localPath: string;
  /** Absolute path on the robot. */
  remotePath: string;
  size: number;
  sha256: string;
}

/** Where a large file's upload stands: everything below `offset` is acknowledged by the robot. */
export interface ResumePoint {
  remotePath: string;
  sha256: string;
  offset: number;
  /**
   * A file written as parallel byte ranges (openssh-put.ts): each range [from, to) holds [from, at) on the robot.
   * `offset` is then the first range's `at` (what is contiguous from the start).
   */
  ranges?: Array<{ from: number; to: number; at: number }>;
}

export interface UploadProgress {
  files: number;
  bytes: number;
  /** The large file in flight, if any: what a retry resumes from. */
  resume: ResumePoint | null;
}

export interface UploadOptions {
  /** Bytes per SFTP write: OpenSSH's sftp-server takes up to 256 KiB minus headers. */
  chunkSize?: number;
  /** SFTP write requests in flight over the whole session. */
  requestsInFlight?: number;
  /** Files open at once (small-file pipelining). */
  filesInFlight?: number;
  /** A retry's starting point (from the previous attempt's last heartbeat). */
  resume?: ResumePoint | null;
  /** Files at least this large report resume points. */
  resumableFrom?: number;
  onProgress?: (p: UploadProgress) => void;
  onFileDone?: (f: UploadItem) => void;
  /**
   * Makes the small files' written parts durable before any is renamed (e.g. one `sync -f` on the robot).
   * Without it each small file is fsynced on its own.
   */
  flush?: () => Promise<void>;
  /**
   * A second SFTP session (its own sftp-server process on the robot) that fsyncs a large file's part while the
   * first keeps writing: the disk writes behind the network instead of all at the end, so the final fsync
   * before the rename only flushes the tail.
   */
  flushSession?: SFTPWrapper;
  /** Bytes between two background flushes of a large file. */
  flushEveryBytes?: number;
  /** Slows the writes down so a test can kill the worker in the middle of an upload (0 = full speed). */
  throttleBytesPerSec?: number;
}

export interface UploadResult {
  files: number;
  /** Bytes actually sent in this attempt (a resumed file counts only its remaining bytes). */
  bytesSent: number;
  /** Bytes of the files installed in this attempt. */
  bytesInstalled: number;
  /** Offset a resumed file continued from (0: nothing resumed); for a file sent as ranges, the bytes not sent again. */
  resumedFrom: number;
  /** A file sent as ranges: the bytes each range did not send again. */
  resumedRanges?: number[];
  failed: Array<{ remotePath: string; error: string }>;
}

/**
 * Small files read into one reused buffer: well under the data one ssh2 write packet carries (31,952 bytes
 * unless the server's limits@openssh.com says less), so such a write is never split and ssh2 never reads the
 * buffer later.
 */
const SCRATCH_BYTES = 16 * 1024;
const scratch = Buffer.allocUnsafe(SCRATCH_BYTES + 1);

/**
 * The most data ssh2 puts in one write packet on this session (it splits larger writes and reads the rest of
 * the buffer later). Not in ssh2's types: 0 when absent, and then no write uses the shared buffer.
 */
const oneWritePacket = (s: SFTPWrapper): number => {
  const n = (s as unknown as { _maxWriteLen?: unknown })._maxWriteLen;
  return typeof n === 'number' ? n : 0;
};

export const SFTP_CHUNK = 255 * 1024; // 261120: OpenSSH's limit for one write (STACK.md)

/**
 * Where an upload writes before its rename. Not the OTA daemon's `<target>.part`: when a robot sync and an OTA
 * deploy of the same path overlap, each writes its own part and renames it whole onto the target; the later
 * rename wins and the target is never a mix of the two.
 */
export const uploadPartPath = (remotePath: string): string => `${remotePath}.robot-sync.part`;

const cb = <T = void>(fn: (done: (err: Error | null | undefined, v?: T) => void) => void) =>
  new Promise<T>((resolve, reject) => fn((err, v) => (err ? reject(err) : resolve(v as T))));

/** A counting semaphore: bounds writes (and open files) in flight. */
class Slots {
  private waiting: Array<() => void> = [];
  constructor(private free: number) {}
  async take(): Promise<void> {
    if (this.free > 0) {
      this.free--;
      return;
    }
    await new Promise<void>((r) => this.waiting.push(r));
  }
  give(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.free++;
  }
}

/** Errors that concern one file (permissions, a path that is a directory...) fail that file, not the session. */
const isFileError = (e: unknown) => typeof (e as { code?: unknown }).code === 'number';

/** Creates every parent directory in one remote command (NUL-separated list on stdin: any path works). */
export async function ensureRemoteDirs(client: Client, remotePaths: string[]): Promise<void> {
  const dirs = [...new Set(remotePaths.map((p) => path.posix.dirname(p)))];
  if (dirs.length === 0) return;
  const r = await exec(client, 'xargs -0 -r mkdir -p --', dirs.join('\0') + '\0');
  if (r.code !== 0) throw new Error(`mkdir on the robot failed: ${r.stderr.trim().slice(0, 500)}`);
}

/** Flushes the robot's filesystem holding `dir` (syncfs): the small files' parts become durable at once. */
export async function flushRemoteFs(client: Client, dir: string): Promise<void> {
  const r = await exec(client, `sync -f ${shq(dir)}`);
  if (r.code !== 0) throw new Error(`sync on the robot failed: ${r.stderr.trim().slice(0, 500)}`);
}

/** One party's side of flushAfterAll. */
export interface FlushParty {
  /** Its parts are written: resolves once the one flush, started after every party arrived or left, is done. */
  flush(): Promise<void>;
  /** It will not flush (it failed, or wrote nothing): the others no longer wait for it. Idempotent. */
  leave(): void;
}

/**
 * One flush for `parties` upload sessions of the same robot: it starts once every party has finished writing
 * (arrived) or left, so it covers every part written, and all the arrived are answered by it. Sessions finish
 * writing about together and a syncfs costs about the same whatever it carries: one on the critical path, where
 * flushing as each session finished took two (the last session's writes came after the first flush started).
 * Each party arrives at most once (uploadFiles flushes once); a failed flush fails every party that arrived.
 */
export function flushAfterAll(parties: number, run: () => Promise<void>): FlushParty[] {
  let waiting = parties;
  let release!: () => void;
  const everyoneIn = new Promise<void>((r) => (release = r));
  let flushed: Promise<void> | null = null;
  return Array.from({ length: parties }, () => {
    let counted = false;
    const count = () => {
      if (counted) return;
      counted = true;
      if (--waiting === 0) release();
    };
    return {
      async flush() {
        count();
        await everyoneIn;
        return (flushed ??= run());
      },
      leave: count,
    };
  });
}

async function partSize(s: SFTPWrapper, partPath: string): Promise<number> {
  try {
    return (await cb<Stats>((d) => s.stat(partPath, d))).size;
  } catch {
    return 0;
  }
}

export async function uploadFiles(s: SFTPWrapper, items: UploadItem[], opts: UploadOptions = {}): Promise<UploadResult> {
  const chunk = opts.chunkSize ?? SFTP_CHUNK;
  const writes = new Slots(opts.requestsInFlight ?? 64);
  const resumableFrom = opts.resumableFrom ?? 8 * chunk;
  const result: UploadResult = { files: 0, bytesSent: 0, bytesInstalled: 0, resumedFrom: 0, failed: [] };
  // Read buffers of answered writes, reused (ssh2 is done with a buffer once its write is answered): a large
  // file allocates `requestsInFlight` of them, not one per chunk for the garbage collector.
  const spare: Buffer[] = [];
  // Large files' confirmed offsets, for the progress report (normally one at a time: they are sent last).
  const inFlight = new Map<string, ResumePoint>();
  const progress = () =>
    opts.onProgress?.({ files: result.files, bytes: result.bytesSent, resume: inFlight.size ? [...inFlight.values()][0] : null });

  const throttleStart = Date.now();
  let throttled = 0;
  const fail = (item: UploadItem, e: unknown) => {
    if (!isFileError(e)) throw e;
    result.failed.push({ remotePath: item.remotePath, error: (e as Error).message });
  };

  /** Writes `<target>.part` (fsynced when `durable`), closes it; true when the whole file is there. */
  async function writePart(item: UploadItem, durable: boolean): Promise<boolean> {
    const part = uploadPartPath(item.remotePath);
    let start = 0;
    const r = opts.resume;
    if (r && r.remotePath === item.remotePath && r.sha256 === item.sha256 && r.offset > 0) {
      // Never past what the robot holds: the heartbeat can be ahead of a .part that another writer truncated.
      start = Math.min(r.offset, await partSize(s, part), item.size);
    }
    const local = await fs.open(item.localPath, 'r');
    let handle: Buffer | undefined;
    const tracked = item.size >= resumableFrom;
    try {
      handle = await cb<Buffer>((d) => s.open(part, start > 0 ? 'r+' : 'w', d));
      if (start > 0) result.resumedFrom = start;
      const point: ResumePoint = { remotePath: item.remotePath, sha256: item.sha256, offset: start };
      if (tracked) inFlight.set(item.remotePath, point);
      // Writes complete out of order: the confirmed offset is the lowest write still unanswered.
      const pending = new Set<number>();
      const pendingWrites: Promise<void>[] = [];
      let failure: unknown = null;
      let issuedEnd = start;
      // Background flushes of a large part (see flushSession): one at a time, never awaited by the writes.
      const flusher = tracked && durable && opts.flushSession ? opts.flushSession : null;
      const every = opts.flushEveryBytes ?? 64 * 1024 * 1024;
      let flushHandle: Buffer | null = null;
      let flushing: Promise<void> | null = null;
      let nextFlush = start + every;
      const backgroundFlush = () => {
        if (!flusher || flushing || point.offset < nextFlush) return;
        nextFlush = point.offset + every;
        flushing = (async () => {
          flushHandle ??= await cb<Buffer>((d) => flusher.open(part, 'r', d));
          await cb((d) => flusher.ext_openssh_fsync(flushHandle!, d));
        })()
          .catch(() => undefined) // only an optimisation: the final fsync below is what counts
          .finally(() => (flushing = null));
      };
      for (let offset = start; offset < item.size && !failure; offset += chunk) {
        const n = Math.min(chunk, item.size - offset);
        issuedEnd = offset + n;
        const buf = spare.pop() ?? Buffer.allocUnsafe(chunk);
        const { bytesRead } = await local.read(buf, 0, n, offset);
        if (bytesRead !== n) throw new Error(`${item.localPath} is shorter than its recorded size ${item.size}`);
        await writes.take();
        if (opts.throttleBytesPerSec) {
          const due = throttleStart + ((throttled += n) / opts.throttleBytesPerSec) * 1000;
          await new Promise((r) => setTimeout(r, Math.max(0, due - Date.now())));
        }
        pending.add(offset);
        const at = offset;
        pendingWrites.push(
          cb((d) => s.write(handle!, buf, 0, n, at, d)).then(
            () => {
              writes.give();
              spare.push(buf);
              pending.delete(at);
              result.bytesSent += n;
              if (tracked) {
                point.offset = pending.size ? Math.min(...pending) : issuedEnd;
                progress();
                backgroundFlush();
              }
            },
            (e: unknown) => {
              writes.give();
              spare.push(buf);
              failure ??= e;
            },
          ),
        );
      }
      await Promise.all(pendingWrites);
      await flushing;
      if (flushHandle) await cb((d) => flusher!.close(flushHandle!, d)).catch(() => undefined);
      if (failure) throw failure;
      if (durable) await cb((d) => s.ext_openssh_fsync(handle!, d));
      await cb((d) => s.close(handle!, d));
      handle = undefined;
      return true;
    } catch (e) {
      if (handle) await cb((d) => s.close(handle!, d)).catch(() => undefined);
      fail(item, e);
      return false;
    } finally {
      if (tracked) inFlight.delete(item.remotePath);
      await local.close();
    }
  }

  /**
   * A small file (one write): open, then read at once — a synchronous read of a few KiB from the page cache costs
   * less than the three thread-pool round trips of open/read/close — and write, close, all pipelined with the
   * other files in flight. Files up to SCRATCH_BYTES are read into one shared buffer right before their write:
   * ssh2 copies the data into its packet before write() returns (for a write that fits one packet), so
   * thousands of small files allocate nothing for the garbage collector to sweep.
   */
  async function writeSmallPart(item: UploadItem, durable: boolean): Promise<boolean> {
    let handle: Buffer | undefined;
    const part = uploadPartPath(item.remotePath);
    try {
      handle = await cb<Buffer>((d) => s.open(part, 'w', d));
      if (item.size > 0) {
        await writes.take();
        try {
          const written = cb((d) => {
            const data = readWhole(item);
            s.write(handle!, data, 0, item.size, 0, d);
          });
          await written;
        } finally {
          writes.give();
        }
        result.bytesSent += item.size;
      }
      if (durable) await cb((d) => s.ext_openssh_fsync(handle!, d));
      await cb((d) => s.close(handle!, d));
      return true;
    } catch (e) {
      if (handle) {
        await cb((d) => s.close(handle!, d)).catch(() => undefined);
        // No part left behind for a file that was not written whole (one that no rename will take).
        await cb((d) => s.unlink(part, d)).catch(() => undefined);
      }
      fail(item, e);
      return false;
    }
  }

  /** The file's bytes (exactly `item.size` of them, or an error): in the shared scratch buffer when they fit. */
  function readWhole(item: UploadItem): Buffer {
    if (item.size > SCRATCH_BYTES || item.size > oneWritePacket(s)) {
      const data = fsSync.readFileSync(item.localPath);
      if (data.length !== item.size) throw new Error(`${item.localPath} is ${data.length} bytes, its recorded size is ${item.size}`);
      return data;
    }
    const fd = fsSync.openSync(item.localPath, 'r');
    try {
      // One byte more than expected: a file that grew is caught as surely as one that shrank.
      const n = fsSync.readSync(fd, scratch, 0, item.size + 1, 0);
      if (n !== item.size) throw new Error(`${item.localPath} is ${n > item.size ? 'larger than' : `${n} bytes, not`} its recorded size ${item.size}`);
      return scratch;
    } finally {
      fsSync.closeSync(fd);
    }
  }

  /** Moves a complete `.part` onto the target name: atomic, and it replaces whatever file was there. */
  async function install(item: UploadItem): Promise<void> {
    try {
      await cb((d) => s.ext_openssh_rename(uploadPartPath(item.remotePath), item.remotePath, d));
      result.files++;
      result.bytesInstalled += item.size;
      opts.onFileDone?.(item);
      progress();
    } catch (e) {
      fail(item, e);
    }
  }

  const pool = async <T>(list: T[], width: number, fn: (x: T) => Promise<void>) => {
    let next = 0;
    await Promise.all(Array.from({ length: Math.min(width, list.length) }, async () => {
      while (next < list.length) await fn(list[next++]);
    }));
  };

  // Small files: all parts written with many files open at once, one flush of the robot's filesystem (one
  // syncfs instead of thousands of fsyncs, which sftp-server would run one after the other), then the renames.
  const small = items.filter((i) => i.size < resumableFrom);
  const written: UploadItem[] = [];
  await pool(small, opts.filesInFlight ?? 64, async (item) => {
    const ok = item.size <= chunk ? await writeSmallPart(item, !opts.flush) : await writePart(item, !opts.flush);
    if (ok) written.push(item);
    progress();
  });
  if (written.length && opts.flush) await opts.flush();
  await pool(written, opts.filesInFlight ?? 64, install);

  // Large files after, one at a time with every write slot; the resumed one first.
  const large = items.filter((i) => i.size >= resumableFrom);
  large.sort((a, b) => Number(b.remotePath === opts.resume?.remotePath) - Number(a.remotePath === opts.resume?.remotePath));
  for (const item of large) if (await writePart(item, true)) await install(item);
  return result;
}
