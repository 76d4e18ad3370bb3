// When the state map goes out: at once on a status change (coalesced within one tick), at most once per
// `progressIntervalMs` for progress alone, and every `heartbeatMs` regardless, so a cloud that missed a
// message converges without asking.
export interface ReporterOptions {
  publish: () => void;
  progressIntervalMs?: number;
  heartbeatMs: number;
  /** Extra work on every heartbeat (journal housekeeping). */
  onHeartbeat?: () => void;
}

export class StateReporter {
  private statusPending = false;
  private progressTimer: NodeJS.Timeout | null = null;
  private heartbeat: NodeJS.Timeout | null = null;
  private lastPublish = 0;
  private readonly progressIntervalMs: number;

  constructor(private readonly o: ReporterOptions) {
    this.progressIntervalMs = o.progressIntervalMs ?? 1000;
  }

  start(): void {
    if (this.heartbeat) return;
    this.heartbeat = setInterval(() => {
      this.o.onHeartbeat?.();
      this.publishNow();
    }, this.o.heartbeatMs);
    this.heartbeat.unref();
  }

  stop(): void {
    if (this.heartbeat) clearInterval(this.heartbeat);
    if (this.progressTimer) clearTimeout(this.progressTimer);
    this.heartbeat = null;
    this.progressTimer = null;
    this.statusPending = false;
  }

  statusChanged(): void {
    if (this.statusPending) return;
    this.statusPending = true;
    setImmediate(() => {
      if (!this.statusPending) return;
      this.statusPending = false;
      this.publishNow();
    });
  }

  progressChanged(): void {
    if (this.progressTimer || this.statusPending) return;
    const wait = Math.max(0, this.lastPublish + this.progressIntervalMs - Date.now());
    this.progressTimer = setTimeout(() => {
      this.progressTimer = null;
      this.publishNow();
    }, wait);
  }

  publishNow(): void {
    this.lastPublish = Date.now();
    this.o.publish();
  }
}
