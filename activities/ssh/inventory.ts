// Inventory of a robot's RFs: one remote command streams the listing (path, size, mtime) and the sha256 of every
// file under the robot's rf_root; the result goes to `inventory_entries` (bulk, chunks of <= 50) and only counts
// go back to the workflow. Cloud sync's first-sync step and robot sync both use it (CONTRACT-OFFLINE.md).
import { Context } from '@temporalio/activity';
import type { Client } from 'ssh2';
import type { Config } from '../../common/config';
import { chunks } from '../../common/db';
import type { OfflineModels, OfflineRobot } from '../../common/models/offline';
import { connectRobot, shq, type RobotSshTarget } from './connect';

export interface InventoryResult {
  files: number;
  bytes: number;
  hashed: number;
}

export interface RemoteFile {
  path: string;
  size: number;
  mtime: Date;
  sha256: string;
}

/** How to reach an offline robot from its `robots` document. Only key credentials are handled here. */
export function offlineRobotTarget(robot: Pick<OfflineRobot, '_id' | 'host' | 'port' | 'username' | 'credential_ref' | 'host_key_sha256'>): RobotSshTarget {
  if (!robot.host_key_sha256) throw new Error(`robot ${robot._id}: host key not pinned yet`);
  const m = /^key:(.+)$/.exec(robot.credential_ref);
  if (!m) throw new Error(`robot ${robot._id}: credential_ref must be key:<file> (got ${robot.credential_ref.split(':')[0]}:...)`);
  return { robotId: robot._id, host: robot.host, port: robot.port, username: robot.username, hostKeySha256: robot.host_key_sha256, privateKeyFile: m[1] };
}

/**
 * The remote command: `S<TAB>size<TAB>mtime<TAB>path` then `H<TAB>sha256  path` records, NUL-terminated (any byte
 * but NUL may appear in a path). A missing root is an empty inventory.
 */
export const inventoryCommand = (root: string): string =>
  `[ -d ${shq(root)} ] || exit 0; ` +
  `find ${shq(root)} -type f -printf 'S\\t%s\\t%T@\\t%p\\0' && ` +
  `find ${shq(root)} -type f -print0 | xargs -0 -r sha256sum -z | sed -z 's/^/H\\t/'`;

/** Runs the listing and parses the NUL-separated stream as it arrives. */
export function listRemoteFiles(client: Client, root: string): Promise<RemoteFile[]> {
  return new Promise((resolve, reject) => {
    client.exec(inventoryCommand(root), (err, stream) => {
      if (err) return reject(err);
      const stat = new Map<string, { size: number; mtime: Date }>();
      const hashes = new Map<string, string>();
      let rest: Buffer = Buffer.alloc(0);
      let stderr = '';
      const record = (rec: string) => {
        if (rec.startsWith('S\t')) {
          const [, size, mtime, ...p] = rec.split('\t');
          stat.set(p.join('\t'), { size: Number(size), mtime: new Date(Number(mtime) * 1000) });
        } else if (rec.startsWith('H\t')) {
          const sep = rec.indexOf('  ', 2);
          hashes.set(rec.slice(sep + 2), rec.slice(2, sep));
        }
      };
      stream.on('data', (d: Buffer) => {
        rest = rest.length ? Buffer.concat([rest, d]) : d;
        let at: number;
        while ((at = rest.indexOf(0)) >= 0) {
          record(rest.subarray(0, at).toString('utf8'));
          rest = rest.subarray(at + 1);
        }
      });
      stream.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      stream.on('close', (code: number | null) => {
        if (code !== 0) return reject(new Error(`inventory of ${root} failed (exit ${code}): ${stderr.trim().slice(0, 500)}`));
        // A file removed between the two passes has no hash: it is not there any more.
        const files: RemoteFile[] = [];
        for (const [p, s] of stat) {
          const sha256 = hashes.get(p);
          if (sha256) files.push({ path: p, size: s.size, mtime: s.mtime, sha256 });
        }
        resolve(files);
      });
    });
  });
}

function heartbeat(details: unknown): void {
  try {
    Context.current().heartbeat(details);
  } catch {
    // Called outside an activity (tests, scripts): nothing to report to.
  }
}

export function createRobotInventoryActivities(deps: { models: OfflineModels; cfg: Config }) {
  const { models } = deps;
  return {
    async inventoryRobot({ robotId }: { robotId: string }): Promise<InventoryResult> {
      const robot = await models.Robot.findById(robotId).lean<OfflineRobot>();
      if (!robot) throw new Error(`unknown robot ${robotId}`);
      const client = await connectRobot(offlineRobotTarget(robot));
      let files: RemoteFile[];
      try {
        files = await listRemoteFiles(client, robot.rf_root);
      } finally {
        client.end();
      }
      const seenAt = new Date();
      let written = 0;
      for (const part of chunks(files)) {
        await models.InventoryEntry.bulkWrite(
          part.map((f) => ({
            replaceOne: {
              filter: { _id: `${robotId}|${f.path}` },
              replacement: { _id: `${robotId}|${f.path}`, robot_id: robotId, path: f.path, size: f.size, mtime: f.mtime, sha256: f.sha256, seen_at: seenAt },
              upsert: true,
            },
          })),
          { ordered: false },
        );
        written += part.length;
        heartbeat({ written });
      }
      // What was not seen this time is gone from the robot.
      await models.InventoryEntry.deleteMany({ robot_id: robotId, seen_at: { $lt: seenAt } });
      await models.Robot.updateOne({ _id: robotId }, { $set: { last_inventory_at: seenAt } });
      return { files: files.length, bytes: files.reduce((n, f) => n + f.size, 0), hashed: files.length };
    },
  };
}

export type RobotInventoryActivities = ReturnType<typeof createRobotInventoryActivities>;
