// Robots' reports for rollout jobs, gathered per rollout over a short window and sent as one rolloutEvents
// signal: a rollout of 1,000 robots then costs a few dozen signals instead of thousands.
//
// Delivery: the MQTT message of a report is acknowledged before its batch is signalled (mqtt.js hands a lane
// one message at a time, so waiting for the window would cap a batch at one report per lane). A report lost
// with a crashed bridge is not lost for good: the daemon re-sends its whole state map every heartbeat until
// the cloud acks the job, which the rollout does only once the terminal status is stored.
import { WorkflowNotFoundError, type WorkflowClient } from '@temporalio/client';
import type { Logger } from '../../common/logger';
import { rolloutEventsSignal, rolloutWorkflowId, type RolloutReport } from '../../workflows/ota-rollout-contract';

export interface RolloutBatcherOptions {
  workflows: Pick<WorkflowClient, 'getHandle'>;
  log: Logger;
  /** How long reports of one rollout are gathered before they go out (default 200 ms). */
  windowMs?: number;
  /** A batch goes out at once when it holds this many entries (default 500). */
  maxBatch?: number;
  /** Called with the job ids of a batch once the workflow has it (the bridge then skips identical repeats). */
  onDelivered?: (rolloutId: string, reports: readonly RolloutReport[]) => void;
  /** Called when the rollout's workflow is gone (closed): the bridge forgets what it knew of these jobs. */
  onClosed?: (rolloutId: string, jobIds: readonly string[]) => void;
}

interface Pending {
  reports: RolloutReport[];
  online: Set<string>;
  timer: NodeJS.Timeout | null;
  sending: Promise<void> | null;
}

export class RolloutBatcher {
  private readonly pending = new Map<string, Pending>();
  private readonly windowMs: number;
  private readonly maxBatch: number;
  private stopping = false;

  constructor(private readonly o: RolloutBatcherOptions) {
    this.windowMs = o.windowMs ?? 200;
    this.maxBatch = o.maxBatch ?? 500;
  }

  addReport(rolloutId: string, report: RolloutReport): void {
    const p = this.entry(rolloutId);
    p.reports.push(report);
    this.schedule(rolloutId, p);
  }

  addOnline(rolloutId: string, jobId: string): void {
    const p = this.entry(rolloutId);
    p.online.add(jobId);
    this.schedule(rolloutId, p);
  }

  /** Reports and returns gathered and not yet signalled, over every rollout (metrics). */
  pendingEntries(): number {
    let n = 0;
    for (const p of this.pending.values()) n += p.reports.length + p.online.size;
    return n;
  }

  /** Sends everything gathered now (bridge shutdown). */
  async flushAll(): Promise<void> {
    this.stopping = true;
    await Promise.all([...this.pending.keys()].map((id) => this.send(id)));
  }

  private entry(rolloutId: string): Pending {
    let p = this.pending.get(rolloutId);
    if (!p) {
      p = { reports: [], online: new Set(), timer: null, sending: null };
      this.pending.set(rolloutId, p);
    }
    return p;
  }

  private schedule(rolloutId: string, p: Pending): void {
    if (p.reports.length + p.online.size >= this.maxBatch) {
      void this.send(rolloutId);
      return;
    }
    if (!p.timer && !p.sending) p.timer = setTimeout(() => void this.send(rolloutId), this.windowMs);
  }

  /** One signal with what is gathered; on a transient failure the entries go back and are tried again. */
  private async send(rolloutId: string): Promise<void> {
    const p = this.pending.get(rolloutId);
    if (!p) return;
    if (p.timer) clearTimeout(p.timer);
    p.timer = null;
    if (p.sending) return p.sending;
    const reports = p.reports.splice(0, p.reports.length);
    const online = [...p.online];
    p.online.clear();
    if (reports.length === 0 && online.length === 0) {
      this.pending.delete(rolloutId);
      return;
    }
    // Info, once per batch: what a crash test waits for before it kills the bridge with a batch in flight.
    this.o.log.info({ rolloutId, reports: reports.length, online: online.length }, 'rollout events batch sending');
    p.sending = (async () => {
      let delay = 250;
      for (;;) {
        try {
          await this.o.workflows.getHandle(rolloutWorkflowId(rolloutId)).signal(rolloutEventsSignal, { reports, online });
          this.o.log.debug({ rolloutId, reports: reports.length, online: online.length }, 'rollout events signalled');
          this.o.onDelivered?.(rolloutId, reports);
          return;
        } catch (err) {
          if (err instanceof WorkflowNotFoundError) {
            this.o.log.warn({ rolloutId, reports: reports.length }, 'reports for a rollout without a running workflow dropped');
            this.o.onClosed?.(rolloutId, [...reports.map((r) => r.jobId), ...online]);
            return;
          }
          // Temporal unreachable: keep them (the daemons' heartbeats would bring them again anyway).
          this.o.log.warn({ err, rolloutId, reports: reports.length }, 'rollout events signal failed; retrying');
          if (this.stopping) return;
          await new Promise((r) => setTimeout(r, delay));
          delay = Math.min(delay * 2, 5000);
        }
      }
    })();
    try {
      await p.sending;
    } finally {
      p.sending = null;
      if (p.reports.length + p.online.size > 0) this.schedule(rolloutId, p);
      else this.pending.delete(rolloutId);
    }
  }
}
