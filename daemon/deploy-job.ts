// One deploy, end to end: check the path, skip if the right bytes are already there, download (resuming,
// retrying transient failures), verify sha256 and size, install atomically. Every failure that should reach
// the cloud as FAILED is a DeployError whose message is safe to publish (no URL, no secret).
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import type { DeployMessage } from '../common/ota-wire';
import type { DaemonLogger as Logger } from './log';
import { DownloadError, downloadToPart, partPaths, removePart, type DownloadResult } from './download';
import { errnoCode, redactUrls, sleep, type KeyedMutex } from './fs-util';
import { installPart, InstallAbortedError } from './install';
import { PathRejectedError, prepareTargetDir, resolveDeployPath } from './paths';

export class DeployError extends Error {
  override name = 'DeployError';
}

/** Abort reason when the daemon stops: the `.part` is kept so the next run resumes it. */
export class DaemonStoppingError extends Error {
  override name = 'DaemonStoppingError';
}

/** Abort reason when the cloud cancels the job: nothing is installed and the `.part` is removed. */
export class JobCanceledError extends Error {
  override name = 'JobCanceledError';
}

export interface RetryPolicy {
  attempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 6, baseDelayMs: 1000, maxDelayMs: 30000 };

export interface DeployEnv {
  /** Real paths of allowed_roots. */
  roots: readonly string[];
  /** Real paths nothing may be deployed into (the state dir). */
  forbidden: readonly string[];
  locks: KeyedMutex;
  log: Logger;
  retry?: RetryPolicy;
  maxBytesPerSecond?: number;
  /** Presigns a GET with the daemon's own S3 keys, for messages without `url`; absent when none are configured. */
  presign?: (bucket: string, key: string) => Promise<string>;
}

export interface DeployHooks {
  signal: AbortSignal;
  /** The current message (the cloud may refresh `url` by redelivering the job while it runs). */
  message: () => DeployMessage;
  /** First called when bytes start to move; then with the percentage (null when the size is unknown). */
  onDownloading: (progress: number | null) => void;
  /**
   * The point of no return, called synchronously right before the target is first modified (the rename, or the
   * chmod of identical bytes already in place). `false` (the job was canceled or the daemon is stopping) aborts
   * with the signal's reason and leaves the target untouched; once it returned `true` the job runs to its real
   * outcome, so the caller must refuse later cancels. Default: proceed unless the signal is aborted.
   */
  commit?: () => boolean;
}

export interface DeployOutcome {
  target: string;
  bytes: number;
  sha256: string;
  /** True when the target already held exactly these bytes and nothing was downloaded. */
  alreadyInstalled: boolean;
  download: Pick<DownloadResult, 'resumedFrom' | 'fetched'> | null;
}

async function sha256File(file: string, signal: AbortSignal): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1 << 20, signal })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/**
 * Re-deploying identical content (or a job whose COMPLETED report was lost in a crash) costs a hash, not a
 * download. Returns the target's stat when it already holds the message's bytes.
 */
async function alreadyInstalled(target: string, msg: DeployMessage, signal: AbortSignal): Promise<fs.Stats | null> {
  if (!msg.sha256 || msg.size === undefined) return null;
  const stat = await fsp.stat(target).catch(() => null);
  if (!stat?.isFile() || stat.size !== msg.size) return null;
  if ((await sha256File(target, signal)) !== msg.sha256) return null;
  return stat;
}

async function ensureSpace(dir: string, target: string, size: number | undefined): Promise<void> {
  if (size === undefined) return;
  const already = (await fsp.stat(partPaths(target).part).catch(() => null))?.size ?? 0;
  const fs = await fsp.statfs(dir);
  const free = fs.bavail * fs.bsize;
  if (size - already > free) {
    throw new DeployError(`not enough disk space in ${dir}: need ${size - already} bytes, ${free} available`);
  }
}

/** What the schema cannot say about a message; checked before anything is written. */
function checkMessage(msg: DeployMessage): void {
  if (msg.mode !== undefined && (msg.mode & 0o6000) !== 0) {
    // A setuid/setgid file written by a daemon that often runs as root is a privilege escalation waiting to
    // happen; such files are installed by the robot's package manager, not over the air.
    throw new DeployError(`mode ${msg.mode.toString(8)} sets setuid/setgid bits, which the OTA daemon does not install`);
  }
  if (msg.url) {
    // fetch() would also read data: URLs; only a real download is a deploy.
    const scheme = new URL(msg.url).protocol;
    if (scheme !== 'https:' && scheme !== 'http:') throw new DeployError(`unsupported url scheme ${scheme} (http or https only)`);
  }
}

async function sourceUrl(msg: DeployMessage, env: DeployEnv): Promise<string> {
  if (msg.url) {
    checkMessage(msg); // the URL may have been refreshed by a redelivery since the job started
    return msg.url;
  }
  if (!env.presign) {
    throw new DeployError('deploy message has no url and the daemon has no S3 credentials (aws_access_key_id/aws_secret_access_key)');
  }
  return env.presign(msg.s3_bucket, msg.s3_object_name);
}

async function downloadWithRetry(target: string, env: DeployEnv, hooks: DeployHooks): Promise<DownloadResult> {
  const policy = env.retry ?? DEFAULT_RETRY;
  let lastError: DownloadError | null = null;
  for (let attempt = 1; attempt <= policy.attempts; attempt++) {
    const msg = hooks.message();
    const url = await sourceUrl(msg, env);
    try {
      return await downloadToPart({
        url,
        target,
        identity: { bucket: msg.s3_bucket, object: msg.s3_object_name, sha256: msg.sha256 ?? null },
        signal: hooks.signal,
        maxBytesPerSecond: env.maxBytesPerSecond,
        onProgress: (received, total) => {
          const size = total ?? msg.size ?? null;
          hooks.onDownloading(size ? Math.min(100, Math.floor((received / size) * 100)) : size === 0 ? 100 : null);
        },
      });
    } catch (e) {
      if (hooks.signal.aborted) throw hooks.signal.reason;
      if (!(e instanceof DownloadError)) throw e;
      lastError = e;
      if (!e.retryable || attempt === policy.attempts) break;
      const delay = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (attempt - 1));
      env.log.warn({ job_id: msg.job_id, attempt, delay_ms: delay, err: redactUrls(e.message) }, 'download attempt failed; retrying');
      await sleep(delay, hooks.signal);
    }
  }
  throw new DeployError(redactUrls(lastError?.message ?? 'download failed'));
}

export async function runDeploy(env: DeployEnv, hooks: DeployHooks): Promise<DeployOutcome> {
  const first = hooks.message();
  checkMessage(first);
  let resolved;
  try {
    resolved = await resolveDeployPath(first.deploy_path, env.roots, env.forbidden);
  } catch (e) {
    if (e instanceof PathRejectedError) throw new DeployError(e.message);
    throw e;
  }
  const commit = hooks.commit ?? (() => !hooks.signal.aborted);
  const release = await env.locks.acquire(resolved.target);
  try {
    const same = await alreadyInstalled(resolved.target, first, hooks.signal);
    if (same) {
      if (!commit()) throw hooks.signal.reason ?? new InstallAbortedError('install aborted');
      if (first.mode !== undefined && (same.mode & 0o7777) !== first.mode) await fsp.chmod(resolved.target, first.mode);
      await removePart(resolved.target); // a partial left by an earlier, interrupted run of the same content
      return { target: resolved.target, bytes: first.size ?? 0, sha256: first.sha256 ?? '', alreadyInstalled: true, download: null };
    }
    await prepareTargetDir(resolved).catch((e: unknown) => {
      if (e instanceof PathRejectedError) throw new DeployError(e.message);
      throw new DeployError(`cannot create ${resolved.dir}: ${errnoCode(e) ?? (e as Error).message}`);
    });
    await ensureSpace(resolved.dir, resolved.target, first.size);
    hooks.onDownloading(0);

    const result = await downloadWithRetry(resolved.target, env, hooks);
    const msg = hooks.message();
    if (msg.sha256 && result.sha256 !== msg.sha256) {
      throw new DeployError(`sha256 mismatch: expected ${msg.sha256}, got ${result.sha256}`);
    }
    if (msg.size !== undefined && result.bytes !== msg.size) {
      throw new DeployError(`size mismatch: expected ${msg.size} bytes, got ${result.bytes}`);
    }
    const { part, sidecar } = partPaths(resolved.target);
    await installPart({ part, target: resolved.target, mode: msg.mode, commit });
    await fsp.rm(sidecar, { force: true });
    return {
      target: resolved.target,
      bytes: result.bytes,
      sha256: result.sha256,
      alreadyInstalled: false,
      download: { resumedFrom: result.resumedFrom, fetched: result.fetched },
    };
  } catch (e) {
    // Only a stopping daemon keeps its partial bytes (the next run resumes them); any other end abandons them.
    const stopping = hooks.signal.aborted && hooks.signal.reason instanceof DaemonStoppingError;
    if (!stopping) await removePart(resolved.target);
    if (hooks.signal.aborted) throw hooks.signal.reason;
    if (e instanceof DeployError) throw e;
    const code = errnoCode(e);
    throw new DeployError(redactUrls(code ? `${code}: ${(e as Error).message}` : (e as Error).message));
  } finally {
    release();
  }
}
