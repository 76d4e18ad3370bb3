// Reads that concurrent deploy requests share. During a burst every request of a batch looks up the same file, the
// same S3 object and one robot each; on FerretDB each lookup is a collection scan, so 16 requests in flight cost 32
// scans and 16 HEADs. Here the lookups that arrive within a few milliseconds of each other go out together: one
// read for the file(s), one `$in` read for the robots, one HEAD per distinct object. Nothing is cached: every
// request still sees the database as it is after the request arrived (a read that joins is one that started later).
import DataLoader from 'dataloader';
import type { OtaFile } from '../../common/models/ota';
import { objectExists } from './s3';
import { rootProblemOf } from './routes/robots';
import type { OtaContext } from './types';

/** How long a lookup waits for others to join it. */
const JOIN_WINDOW_MS = 2;

interface FileKey {
  bucket: string;
  object: string;
}
type RobotRoots = { _id: string; deploy_roots: string[]; mqtt_username?: string | null };

const keyOf = (k: FileKey) => `${k.bucket}\n${k.object}`;
const schedule = (run: () => void) => void setTimeout(run, JOIN_WINDOW_MS);

export interface DeployLookups {
  /** The file record of `bucket`/`object`, or null. */
  file(bucket: string, object: string): Promise<OtaFile | null>;
  /** deployRootProblem: null when `deployPath` is inside the provisioned robot's deploy roots. */
  rootProblem(robotId: string, deployPath: string): Promise<string | null>;
  /** Whether the object exists in storage (HEAD). */
  objectExists(bucket: string, object: string): Promise<boolean>;
}

export function createDeployLookups(ctx: Pick<OtaContext, 'models' | 's3'>): DeployLookups {
  const files = new DataLoader<FileKey, OtaFile | null, string>(
    async (keys) => {
      const distinct = [...new Map(keys.map((k) => [keyOf(k), k])).values()];
      const rows = await ctx.models.OtaFile.find({ $or: distinct.map((k) => ({ s3_bucket: k.bucket, s3_object_name: k.object })) }).lean<OtaFile[]>();
      const byKey = new Map(rows.map((r) => [keyOf({ bucket: r.s3_bucket, object: r.s3_object_name }), r]));
      return keys.map((k) => byKey.get(keyOf(k)) ?? null);
    },
    { cache: false, batchScheduleFn: schedule },
  );
  const robots = new DataLoader<string, RobotRoots | null>(
    async (ids) => {
      const rows = await ctx.models.Robot.find({ _id: { $in: [...new Set(ids)] } }, { deploy_roots: 1, mqtt_username: 1 }).lean<RobotRoots[]>();
      const byId = new Map(rows.map((r) => [r._id, r]));
      return ids.map((id) => byId.get(id) ?? null);
    },
    { cache: false, batchScheduleFn: schedule },
  );
  const objects = new DataLoader<FileKey, boolean, string>(
    async (keys) => {
      const distinct = new Map(keys.map((k) => [keyOf(k), k]));
      const found = new Map(await Promise.all([...distinct].map(async ([id, k]) => [id, await objectExists(ctx.s3, { bucket: k.bucket, key: k.object }).catch((e: unknown) => e as Error)] as const)));
      // A failed HEAD fails only the requests that asked for that object.
      return keys.map((k) => found.get(keyOf(k)) as boolean | Error);
    },
    { cache: false, batchScheduleFn: schedule },
  );
  return {
    file: (bucket, object) => files.load({ bucket, object }),
    rootProblem: async (robotId, deployPath) => {
      const robot = await robots.load(robotId);
      return rootProblemOf(robot?.mqtt_username ? robot : null, robotId, deployPath);
    },
    objectExists: (bucket, object) => objects.load({ bucket, object }),
  };
}
