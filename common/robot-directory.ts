// Where activities learn how to reach a robot. Secrets stay behind references (key and password *files*), so a
// workflow passes only a robot id. The simulated fleet's manifest (infra/fleet.ts) is one source; a production
// install builds the same interface from its robots collection and secret store.
import fs from 'node:fs';
import type { FleetManifest } from '../infra/fleet';

/** How to reach a robot over SSH. Secrets stay behind file paths, never in workflow inputs or logs. */
export interface RobotSshTarget {
  robotId: string;
  host: string;
  port: number;
  username: string;
  /** OpenSSH-style "SHA256:<base64>" fingerprint of the robot's host key (pinned: any other key is refused). */
  hostKeySha256: string;
  /** Path of the private key file (key authentication). */
  privateKeyFile?: string;
  /**
   * Name of the environment variable holding the SSH password (password authentication, as the seed's installs
   * do). Only the name travels; the activity that connects reads the value.
   */
  passwordEnv?: string;
}

export interface RobotSshInfo extends RobotSshTarget {
  /** The robot's file root: RFs and probe files live below it. */
  root: string;
}

export interface RobotDirectory {
  ids(): string[];
  ssh(robotId: string): RobotSshInfo;
  mqttCredentials(robotId: string): { username: string; password: string };
}

export class UnknownRobotError extends Error {
  override name = 'UnknownRobotError';
}

export function robotDirectoryFromFleet(manifest: FleetManifest): RobotDirectory {
  const byId = new Map(manifest.robots.map((r) => [r.id, r]));
  const get = (id: string) => {
    const r = byId.get(id);
    if (!r) throw new UnknownRobotError(`unknown robot ${id}`);
    return r;
  };
  return {
    ids: () => [...byId.keys()],
    ssh: (id) => {
      const r = get(id);
      return { robotId: id, ...r.ssh, privateKeyFile: manifest.clientKeyFile, root: r.root };
    },
    mqttCredentials: (id) => {
      const r = get(id);
      return { username: r.mqtt.username, password: fs.readFileSync(r.mqtt.passwordFile, 'utf8').trim() };
    },
  };
}
