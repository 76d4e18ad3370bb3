// Job bookkeeping: what the daemon does with deploy / ack / cancel, with at most `maxConcurrent` deploys at a
// time. The journal is the source of truth for every status; this class adds what only lives while the
// process runs (queue, abort controllers, live progress).
import type { DeployMessage, JobReport, StateMessage } from '../common/ota-wire';
import type { DaemonLogger as Logger } from './log';
import { DaemonStoppingError, DeployError, JobCanceledError, runDeploy, type DeployEnv } from './deploy-job';
import { redactUrls, sleep } from './fs-util';
import { isFinished, type Journal, type JournalEntry, type LocalStatus } from './journal';

export type ChangeKind = 'status' | 'progress';

export interface JobManagerOptions {
  journal: Journal;
  env: DeployEnv;
  maxConcurrent: number;
  log: Logger;
  /** Something reportable changed; the reporter decides when to publish. */
  onChange: (kind: ChangeKind) => void;
  /** A finished job the cloud already acked was deployed again: tell it once more how that job ended. */
  onReplay: (jobId: string, report: JobReport) => void;
  /** The last running job finished and nothing is queued. */
  onIdle?: () => void;
}

interface Running {
  controller: AbortController;
  done: Promise<void>;
  /** Set (synchronously) when the job passed its point of no return: a cancel can no longer stop it. */
  committed: boolean;
}

export class JobManager {
  private queue: string[] = [];
  private readonly running = new Map<string, Running>();
  private readonly progress = new Map<string, number | null>();
  private stopping = false;

  constructor(private readonly o: JobManagerOptions) {}

  /** Queues the jobs a previous run left RECEIVED or DOWNLOADING; their `.part` files are continued. */
  resumeUnfinished(): void {
    for (const e of this.o.journal.unfinished()) {
      this.o.log.info({ job_id: e.job_id, status: e.status }, 'resuming job interrupted by the last shutdown');
      this.enqueue(e.job_id);
    }
  }

  async deploy(msg: DeployMessage): Promise<void> {
    const { journal, log } = this.o;
    const existing = journal.get(msg.job_id);
    if (existing) {
      await this.redelivered(existing, msg);
      return;
    }
    journal.accept(msg);
    try {
      await journal.flush();
    } catch (e) {
      // E.g. ENOSPC on the state dir. The job runs anyway, from memory, and the caller PUBACKs: refusing the
      // message instead would not help, since the broker redelivers an unacknowledged QoS 1 message only on
      // the next reconnect, so the job would wait unseen for a reconnect that may never come. Running it, the
      // cloud sees its states (a FAILED "not enough disk space" at worst); the journal stays dirty and every
      // later status change or heartbeat writes it again; and if the daemon dies before that succeeds, its
      // offline→online presence makes the cloud re-dispatch the unfinished job.
      log.error({ job_id: msg.job_id, err: e }, 'could not persist the journal; running the job from memory');
    }
    log.info({ job_id: msg.job_id, deploy_path: msg.deploy_path, size: msg.size }, 'job received');
    this.o.onChange('status');
    this.enqueue(msg.job_id);
  }

  /**
   * A deploy that must not run (its signature failed): the job goes FAILED with the reason, nothing is downloaded.
   * A job already known is left alone: a forged copy must not change what a genuine delivery started.
   */
  async refuse(msg: DeployMessage, reason: string): Promise<void> {
    const { journal, log } = this.o;
    if (journal.get(msg.job_id)) {
      log.warn({ job_id: msg.job_id }, 'refused copy of a known job ignored');
      return;
    }
    journal.accept({ ...msg, url: undefined });
    await this.setStatus(msg.job_id, 'FAILED', reason);
  }

  private async redelivered(existing: JournalEntry, msg: DeployMessage): Promise<void> {
    const { journal, log } = this.o;
    const id = existing.job_id;
    // Finished first: a journal written by an older daemon may hold a finished job marked canceled.
    if (isFinished(existing.status)) {
      log.info({ job_id: id, status: existing.status }, 'deploy redelivered for a finished job; re-reporting its result');
      if (existing.acked && existing.status) this.o.onReplay(id, this.report(existing));
      else this.o.onChange('status');
      return;
    }
    if (existing.canceled) {
      log.info({ job_id: id }, 'ignoring deploy of a canceled job');
      return;
    }
    // Still queued or running: the cloud re-sent it (e.g. after a reconnect). A fresh presigned URL replaces
    // the stored one, which may have expired while the robot was offline.
    if (existing.message && msg.url && msg.url !== existing.message.url) {
      journal.update(id, { message: { ...existing.message, url: msg.url } });
      await journal.flush();
      log.info({ job_id: id }, 'deploy redelivered for a running job; download URL refreshed');
    }
    this.o.onChange('status');
  }

  async ack(jobId: string): Promise<void> {
    const entry = this.o.journal.get(jobId);
    if (!entry) {
      this.o.log.debug({ job_id: jobId }, 'ack for an unknown job ignored');
      return;
    }
    if (entry.acked) return;
    this.o.journal.update(jobId, { acked: true });
    await this.o.journal.flush();
    this.o.log.info({ job_id: jobId, status: entry.status }, 'job acked; no longer reported');
  }

  async cancel(jobId: string): Promise<void> {
    const { journal, log } = this.o;
    const entry = journal.get(jobId);
    if (!entry) {
      // The cancel overtook the deploy (different topics are not ordered): remember it so the deploy is ignored.
      journal.rememberCanceled(jobId);
      await journal.flush();
      log.info({ job_id: jobId }, 'cancel for a job not received yet; its deploy will be ignored');
      return;
    }
    if (entry.canceled) return;
    // A cancel only stops work that can still be stopped. A finished job (COMPLETED or FAILED, maybe not yet
    // reported or acked) or one whose install is under way keeps its real outcome, reported until acked:
    // marking it canceled would hide a file that is in fact installed. Everything below runs synchronously
    // up to the abort, and the commit in execute() is synchronous too, so exactly one of them wins.
    const running = this.running.get(jobId);
    if (isFinished(entry.status) || running?.committed) {
      log.info(
        { job_id: jobId, status: entry.status, installing: Boolean(running?.committed) },
        'cancel for a job that already finished or is being installed ignored; its outcome is reported until acked',
      );
      if (!entry.acked) this.o.onChange('status');
      return;
    }
    journal.update(jobId, { canceled: true });
    this.queue = this.queue.filter((id) => id !== jobId);
    running?.controller.abort(new JobCanceledError(`job ${jobId} canceled`));
    await journal.flush();
    log.info({ job_id: jobId, status: entry.status }, 'job canceled');
    this.o.onChange('status');
  }

  /** The state map published on `ota/<id>/state`: every job the cloud has not acked. */
  stateMap(): StateMessage {
    const map: StateMessage = {};
    for (const e of this.o.journal.reportable()) map[e.job_id] = this.report(e);
    return map;
  }

  private report(e: JournalEntry): JobReport {
    const status = e.status ?? 'RECEIVED';
    const report: JobReport = { status, error_msg: e.error_msg };
    if (status === 'RECEIVED') report.progress = 0;
    else if (status === 'COMPLETED') report.progress = 100;
    else if (status === 'DOWNLOADING') {
      const p = this.progress.get(e.job_id);
      if (p !== undefined && p !== null) report.progress = p;
    }
    return report;
  }

  /** Periodic housekeeping (called with the heartbeat): prune the journal and persist. */
  async maintain(): Promise<void> {
    this.o.journal.prune();
    await this.o.journal.flush();
  }

  /** Aborts running downloads (their `.part` stays for the next run) and persists the journal. */
  async stop(timeoutMs = 5000): Promise<void> {
    this.stopping = true;
    this.queue = [];
    const running = [...this.running.values()];
    for (const r of running) r.controller.abort(new DaemonStoppingError('daemon stopping'));
    await Promise.race([Promise.allSettled(running.map((r) => r.done)), sleep(timeoutMs)]);
    await this.o.journal.flush();
  }

  /** Resolves once nothing is queued or running (tests). */
  async idle(): Promise<void> {
    while (this.queue.length > 0 || this.running.size > 0) {
      await Promise.allSettled([...this.running.values()].map((r) => r.done));
      await sleep(0);
    }
  }

  private enqueue(jobId: string): void {
    if (this.queue.includes(jobId) || this.running.has(jobId)) return;
    this.queue.push(jobId);
    this.pump();
  }

  private pump(): void {
    while (!this.stopping && this.running.size < this.o.maxConcurrent && this.queue.length > 0) {
      const id = this.queue.shift()!;
      const entry = this.o.journal.get(id);
      if (!entry?.message || entry.canceled) continue;
      const running: Running = { controller: new AbortController(), done: Promise.resolve(), committed: false };
      this.running.set(id, running);
      running.done = this.execute(entry.message, running)
        .catch((e: unknown) => this.o.log.error({ job_id: id, err: e }, 'job bookkeeping failed'))
        .finally(() => {
          this.running.delete(id);
          this.progress.delete(id);
          this.pump();
          if (this.running.size === 0 && this.queue.length === 0) this.o.onIdle?.();
        });
    }
  }

  private async setStatus(jobId: string, status: LocalStatus, errorMsg: string | null = null): Promise<void> {
    this.o.journal.update(jobId, { status, error_msg: errorMsg });
    try {
      await this.o.journal.flush();
    } catch (e) {
      // Reporting goes on from memory; the next status change tries to persist again.
      this.o.log.error({ job_id: jobId, err: e }, 'could not persist the journal');
    }
    this.o.onChange('status');
  }

  private async execute(initial: DeployMessage, running: Running): Promise<void> {
    const id = initial.job_id;
    const { journal, log } = this.o;
    const signal = running.controller.signal;
    let downloading = journal.get(id)?.status === 'DOWNLOADING';
    try {
      const outcome = await runDeploy(this.o.env, {
        signal,
        // Checked and recorded in one synchronous step right before the rename: a cancel handled before it
        // aborts the job (nothing installed), one handled after it is refused (see cancel()).
        commit: () => {
          if (signal.aborted) return false;
          running.committed = true;
          return true;
        },
        // Ack or cancel drop the stored message; the job keeps the last one it saw.
        message: () => journal.get(id)?.message ?? initial,
        onDownloading: (progress) => {
          if (!downloading) {
            downloading = true;
            void this.setStatus(id, 'DOWNLOADING');
          }
          if (this.progress.get(id) !== progress) {
            this.progress.set(id, progress);
            this.o.onChange('progress');
          }
        },
      });
      log.info(
        {
          job_id: id,
          target: outcome.target,
          bytes: outcome.bytes,
          sha256: outcome.sha256,
          already_installed: outcome.alreadyInstalled,
          resumed_from: outcome.download?.resumedFrom ?? 0,
          fetched: outcome.download?.fetched ?? 0,
        },
        'job completed',
      );
      await this.setStatus(id, 'COMPLETED');
    } catch (e) {
      if (signal.aborted) {
        if (signal.reason instanceof JobCanceledError) log.info({ job_id: id }, 'download aborted by cancel; partial file removed');
        else log.info({ job_id: id }, 'download stopped with the daemon; it resumes on the next start');
        return;
      }
      const message = e instanceof DeployError ? e.message : `internal error: ${redactUrls(e instanceof Error ? e.message : String(e))}`;
      log.warn({ job_id: id, error_msg: message }, 'job failed');
      await this.setStatus(id, 'FAILED', message);
    }
  }
}
