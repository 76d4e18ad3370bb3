// The daemon's memory across restarts: one JSON file in state_dir, rewritten atomically on every status change
// (not on progress ticks). It makes deploys idempotent by job id — a redelivered deploy of a finished job is
// re-reported, not re-downloaded — and lets an interrupted download resume at start.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { checkDeployMessage, type DeployMessage } from '../common/ota-wire';
import type { DaemonLogger as Logger } from './log';
import { writeFileAtomic } from './fs-util';

export const LOCAL_STATUSES = ['RECEIVED', 'DOWNLOADING', 'COMPLETED', 'FAILED'] as const;
export type LocalStatus = (typeof LOCAL_STATUSES)[number];
export const isFinished = (s: LocalStatus | null): boolean => s === 'COMPLETED' || s === 'FAILED';

export interface JournalEntry {
  job_id: string;
  /** Dropped once the job is acked or canceled: the id alone is enough to dedupe. */
  message: DeployMessage | null;
  /** Null for a job known only from its cancel (the cancel overtook the deploy). */
  status: LocalStatus | null;
  error_msg: string | null;
  acked: boolean;
  /** Canceled before it finished: nothing was installed. A cancel for a finished job is ignored. */
  canceled: boolean;
  received_at: number;
  updated_at: number;
}

/** Checks one entry of the file (hand-written: the daemon bundles no schema library); throws on damage. */
function checkEntry(v: unknown, i: number): JournalEntry {
  const e = v as Record<string, unknown>;
  const bad = (field: string) => new Error(`jobs[${i}].${field}: invalid`);
  if (typeof e !== 'object' || e === null) throw bad('(entry)');
  if (typeof e.job_id !== 'string' || e.job_id === '') throw bad('job_id');
  let message: DeployMessage | null = null;
  if (e.message !== null) {
    const m = checkDeployMessage(e.message);
    if (!m.ok) throw bad('message');
    message = m.value;
  }
  if (e.status !== null && !LOCAL_STATUSES.includes(e.status as LocalStatus)) throw bad('status');
  if (e.error_msg !== null && typeof e.error_msg !== 'string') throw bad('error_msg');
  for (const k of ['acked', 'canceled'] as const) if (typeof e[k] !== 'boolean') throw bad(k);
  for (const k of ['received_at', 'updated_at'] as const) if (typeof e[k] !== 'number') throw bad(k);
  return {
    job_id: e.job_id,
    message,
    status: e.status as LocalStatus | null,
    error_msg: e.error_msg as string | null,
    acked: e.acked as boolean,
    canceled: e.canceled as boolean,
    received_at: e.received_at as number,
    updated_at: e.updated_at as number,
  };
}

function parseJournal(text: string): JournalEntry[] {
  const doc = JSON.parse(text) as { v?: unknown; jobs?: unknown };
  if (doc?.v !== 1 || !Array.isArray(doc.jobs)) throw new Error('not a version 1 journal');
  return doc.jobs.map(checkEntry);
}

export interface JournalOptions {
  /** How many finished-and-forgotten job ids are kept to recognise redeliveries. */
  keepTombstones?: number;
  /** A finished job the cloud never acks stops being reported after this long. */
  unackedRetentionMs?: number;
  now?: () => number;
}

export class Journal {
  private readonly jobs = new Map<string, JournalEntry>();
  private saving: Promise<void> | null = null;
  private dirty = false;
  private readonly keepTombstones: number;
  private readonly unackedRetentionMs: number;
  private readonly now: () => number;

  private constructor(
    readonly file: string,
    private readonly log: Logger,
    opts: JournalOptions,
  ) {
    this.keepTombstones = opts.keepTombstones ?? 1000;
    this.unackedRetentionMs = opts.unackedRetentionMs ?? 30 * 24 * 3600 * 1000;
    this.now = opts.now ?? Date.now;
  }

  static async open(stateDir: string, log: Logger, opts: JournalOptions = {}): Promise<Journal> {
    const journal = new Journal(path.join(stateDir, 'journal.json'), log, opts);
    await journal.load();
    return journal;
  }

  private async load(): Promise<void> {
    let text: string;
    try {
      text = await fsp.readFile(this.file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw e;
    }
    let jobs: JournalEntry[];
    try {
      jobs = parseJournal(text);
    } catch (e) {
      // The file is only ever replaced atomically, so this means outside damage. Refusing to start would put
      // the robot in a restart loop; starting empty only costs re-downloads. Keep the evidence.
      const aside = `${this.file}.corrupt-${this.now()}`;
      fs.renameSync(this.file, aside);
      this.log.error({ err: e, aside }, 'journal unreadable; moved aside, starting with an empty journal');
      return;
    }
    for (const entry of jobs) this.jobs.set(entry.job_id, entry);
  }

  get(jobId: string): JournalEntry | undefined {
    return this.jobs.get(jobId);
  }

  /** Entries in arrival order. */
  all(): JournalEntry[] {
    return [...this.jobs.values()].sort((a, b) => a.received_at - b.received_at);
  }

  /**
   * Jobs whose state the cloud still wants to hear about. A finished job is reported until acked even if it is
   * marked canceled: the daemon no longer cancels finished jobs, but older versions did, and the real outcome
   * (a file that is installed, or a failure) must still reach the cloud.
   */
  reportable(): JournalEntry[] {
    return this.all().filter((e) => e.status !== null && !e.acked && (!e.canceled || isFinished(e.status)));
  }

  /** Jobs that were accepted but not finished when the daemon last stopped. */
  unfinished(): JournalEntry[] {
    return this.all().filter((e) => e.message !== null && !e.acked && !e.canceled && !isFinished(e.status));
  }

  accept(message: DeployMessage): JournalEntry {
    const t = this.now();
    const entry: JournalEntry = {
      job_id: message.job_id,
      message,
      status: 'RECEIVED',
      error_msg: null,
      acked: false,
      canceled: false,
      received_at: t,
      updated_at: t,
    };
    this.jobs.set(entry.job_id, entry);
    this.dirty = true;
    return entry;
  }

  /** Applies `patch` to a known job; unknown ids are ignored (returns undefined). */
  update(jobId: string, patch: Partial<Omit<JournalEntry, 'job_id' | 'received_at'>>): JournalEntry | undefined {
    const entry = this.jobs.get(jobId);
    if (!entry) return undefined;
    Object.assign(entry, patch, { updated_at: this.now() });
    if ((entry.acked && isFinished(entry.status)) || entry.canceled) entry.message = null;
    this.dirty = true;
    return entry;
  }

  /** Records a cancel for a job not seen yet, so its deploy is ignored if it arrives later. */
  rememberCanceled(jobId: string): JournalEntry {
    const t = this.now();
    const entry: JournalEntry = {
      job_id: jobId,
      message: null,
      status: null,
      error_msg: null,
      acked: false,
      canceled: true,
      received_at: t,
      updated_at: t,
    };
    this.jobs.set(jobId, entry);
    this.dirty = true;
    return entry;
  }

  /**
   * Forgets what no longer matters: finished jobs the cloud never acked (after the retention period) become
   * tombstones, and only the newest `keepTombstones` tombstones are kept.
   */
  prune(): void {
    const t = this.now();
    for (const e of this.jobs.values()) {
      if (!e.acked && isFinished(e.status) && t - e.updated_at > this.unackedRetentionMs) {
        e.acked = true;
        e.message = null;
        this.dirty = true;
      }
    }
    const tombstones = [...this.jobs.values()]
      .filter((e) => (e.canceled && !isFinished(e.status)) || (e.acked && (isFinished(e.status) || e.message === null)))
      .sort((a, b) => b.updated_at - a.updated_at);
    for (const e of tombstones.slice(this.keepTombstones)) {
      this.jobs.delete(e.job_id);
      this.dirty = true;
    }
  }

  /**
   * Persists pending changes. Concurrent callers share writes: at most one write runs and at most one more
   * is queued behind it, whatever the number of callers.
   */
  async flush(): Promise<void> {
    while (this.dirty || this.saving) {
      if (this.saving) {
        await this.saving;
        continue;
      }
      this.dirty = false;
      this.prune();
      this.dirty = false;
      const body = JSON.stringify({ v: 1, jobs: this.all() });
      this.saving = writeFileAtomic(this.file, body, 0o600).finally(() => {
        this.saving = null;
      });
      try {
        await this.saving;
      } catch (e) {
        this.dirty = true; // the next flush tries again
        throw e;
      }
    }
  }
}
