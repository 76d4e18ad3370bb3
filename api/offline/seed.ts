// The demo center's robots in the offline database: the simulated fleet's robots (infra/fleet.ts), reached
// with the fleet's client key and their pinned host keys. Inserted once: what the specialist changed later
// (connected, pinned key, last sync) is never overwritten.
import { chunks } from '../../common/db';
import type { OfflineModels } from '../../common/models/offline';
import type { RobotManifest } from '../../infra/fleet';

/** Where a simulated robot keeps its RFs (the cloud's perfect state uses the same root). */
export const demoRfRoot = (robot: Pick<RobotManifest, 'root'>): string => `${robot.root}/rf`;

export async function seedOfflineRobots(models: OfflineModels, clientKeyFile: string, robots: RobotManifest[]): Promise<number> {
  let inserted = 0;
  for (const part of chunks(robots)) {
    const r = await models.Robot.bulkWrite(
      part.map((robot) => ({
        updateOne: {
          filter: { _id: robot.id },
          update: {
            $setOnInsert: {
              host: robot.ssh.host,
              port: robot.ssh.port,
              username: robot.ssh.username,
              credential_ref: `key:${clientKeyFile}`,
              host_key_sha256: robot.ssh.hostKeySha256,
              // The demo's robots sit on the LAN: connected, so the first cloud sync can take their inventory.
              connected: true,
              rf_root: demoRfRoot(robot),
              last_inventory_at: null,
              last_sync: null,
            },
          },
          upsert: true,
        },
      })),
      { ordered: false },
    );
    inserted += r.upsertedCount;
  }
  return inserted;
}
