// Batched job reads for the bridge: the lanes' concurrent "which robot owns this job?" reads are gathered for a
// few milliseconds and answered by one `$in` query. FerretDB scans the whole collection on every filter, so a
// read per report cost a scan per robot when a fleet reports at once; now it is a scan per window.
import type { Model } from 'mongoose';
import type { OtaJob, OtaModels } from '../../common/models/ota';
import { withDbTimeout } from '../../activities/db/timeout';
import { overlayRolloutResults } from '../../activities/db/ota-rollout-results';

export type JobOwner = Pick<OtaJob, '_id' | 'robot_id' | 'status' | 'deployment_id'>;

export class JobLookup {
  private waiting = new Map<string, Array<{ resolve: (j: JobOwner | null) => void; reject: (e: unknown) => void }>>();
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly OtaJob: Model<OtaJob>,
    private readonly dbTimeoutMs: number,
    /** How long reads are gathered (default 5 ms) and how many ids one query takes at most (default 200). */
    private readonly windowMs = 5,
    private readonly maxIds = 200,
    /** Finished jobs moved out of OtaJob (api/ota/archiver.ts): ids not found live are looked up here. */
    private readonly archive?: Model<OtaJob>,
    /** Rollout jobs' terminal statuses (activities/db/ota-rollout-results.ts): applied to the live rows read. */
    private readonly results?: OtaModels['OtaRolloutResult'],
  ) {}

  get(jobId: string): Promise<JobOwner | null> {
    return new Promise((resolve, reject) => {
      const list = this.waiting.get(jobId) ?? [];
      list.push({ resolve, reject });
      this.waiting.set(jobId, list);
      if (this.waiting.size >= this.maxIds) void this.flush();
      else this.timer ??= setTimeout(() => void this.flush(), this.windowMs);
    });
  }

  private async flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const batch = this.waiting;
    this.waiting = new Map();
    if (batch.size === 0) return;
    try {
      const live = await withDbTimeout(
        'load jobs',
        this.dbTimeoutMs,
        this.OtaJob.find({ _id: { $in: [...batch.keys()] } }, { robot_id: 1, status: 1, deployment_id: 1 }).lean<JobOwner[]>(),
      );
      const rows = this.results ? await overlayRolloutResults(this.results, live, this.dbTimeoutMs) : live;
      const byId = new Map(rows.map((r) => [String(r._id), r]));
      const missing = [...batch.keys()].filter((id) => !byId.has(id));
      if (this.archive && missing.length > 0) {
        const archived = await withDbTimeout(
          'load archived jobs',
          this.dbTimeoutMs,
          this.archive.find({ _id: { $in: missing } }, { robot_id: 1, status: 1, deployment_id: 1 }).lean<JobOwner[]>(),
        );
        for (const r of archived) byId.set(String(r._id), r);
      }
      for (const [id, waiters] of batch) for (const w of waiters) w.resolve(byId.get(id) ?? null);
    } catch (err) {
      for (const waiters of batch.values()) for (const w of waiters) w.reject(err);
    }
  }
}
