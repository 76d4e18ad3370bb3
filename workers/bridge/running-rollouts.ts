// Which running rollout a report's job belongs to, without reading the job. A rollout job's id is derived from
// (rollout, robot) (rolloutJobId), so the bridge recognises the first report of each rollout job from the list of
// running rollouts alone: measured, a 10,000-robot rollout's first reports cost a batched job read each window
// (a collection scan of every job on FerretDB), which held FerretDB so busy that the rollout's own activities
// timed out. The list is one small read, at most once per `maxAgeMs`.
//
// Safe by construction: the id is computed from the topic's robot, so a robot reporting another robot's job never
// matches (it goes the database way, where the owner check drops it); the rollout's apply activity reads the
// reported jobs anyway (owner, rollout and stored status) before anything is stored.
import type { OtaModels } from '../../common/models/ota';
import { withDbTimeout } from '../../activities/db/timeout';
import { rolloutJobId } from '../../activities/db/ota-rollouts';

export class RunningRollouts {
  private ids: string[] = [];
  private readAt = 0;
  private reading: Promise<void> | null = null;

  constructor(
    private readonly model: OtaModels['OtaRollout'],
    private readonly dbTimeoutMs: number,
    private readonly maxAgeMs = 1000,
  ) {}

  /** The running (or paused) rollout whose job for `robotId` is `jobId`, or null. */
  async rolloutOf(robotId: string, jobId: string): Promise<string | null> {
    if (Date.now() - this.readAt > this.maxAgeMs) await this.refresh();
    return this.ids.find((id) => rolloutJobId(id, robotId) === jobId) ?? null;
  }

  private refresh(): Promise<void> {
    this.reading ??= (async () => {
      try {
        const rows = await withDbTimeout(
          'load running rollouts',
          this.dbTimeoutMs,
          this.model.find({ status: { $in: ['RUNNING', 'PAUSED'] } }, { _id: 1 }).lean<Array<{ _id: string }>>(),
        );
        this.ids = rows.map((r) => r._id);
        this.readAt = Date.now();
      } finally {
        this.reading = null;
      }
    })();
    return this.reading;
  }
}
