// An SSH session to an offline app's robot, from its `robots` document: credential by reference (`env:<VAR>`
// or `key:<file>`), host key pinned. First contact records the key the robot presents; from then on any other
// key is a "host key mismatch" and nothing is done on that robot. Failures become non-retryable activity
// failures with a type the robot-sync workflow reports per robot.
import { ApplicationFailure, Context } from '@temporalio/activity';
import type { Client } from 'ssh2';
import type { OfflineModels, OfflineRobot } from '../../common/models/offline';
import {
  connectWithHostKey,
  credentialFromRef,
  HostKeyMismatchError,
  RobotCredentialError,
  RobotUnreachableError,
  type RobotSshTarget,
} from './connect';

/** Failure types the robot-sync workflow turns into a per-robot status. */
export const ROBOT_FAILURE = {
  hostKeyMismatch: 'HostKeyMismatch',
  unreachable: 'RobotUnreachable',
  credential: 'RobotCredential',
  unknownRobot: 'UnknownRobot',
} as const;

export type RobotDoc = Pick<OfflineRobot, '_id' | 'host' | 'port' | 'username' | 'credential_ref' | 'host_key_sha256'>;

/** The target for a robot document; `hostKeySha256` is empty while the key is not pinned yet. */
export function offlineRobotTarget(robot: RobotDoc): RobotSshTarget {
  return {
    robotId: robot._id,
    host: robot.host,
    port: robot.port,
    username: robot.username,
    hostKeySha256: robot.host_key_sha256 ?? '',
    ...credentialFromRef(robot._id, robot.credential_ref),
  };
}

/**
 * Connects to a robot document's robot; pins its host key on first contact (only if still unpinned, so two
 * first contacts cannot overwrite each other). Returns the fingerprint the robot presented.
 */
export async function connectOfflineRobot(
  models: Pick<OfflineModels, 'Robot'>,
  robot: RobotDoc,
  readyTimeoutMs = 10000,
): Promise<{ client: Client; hostKeySha256: string; pinnedNow: boolean }> {
  const target = offlineRobotTarget(robot);
  const { client, hostKeySha256 } = await connectWithHostKey(target, robot.host_key_sha256 ?? null, { readyTimeoutMs });
  if (robot.host_key_sha256) return { client, hostKeySha256, pinnedNow: false };
  const pinned = await models.Robot.updateOne({ _id: robot._id, host_key_sha256: null }, { $set: { host_key_sha256: hostKeySha256 } });
  if (pinned.modifiedCount === 0) {
    // Someone pinned it meanwhile: the key we saw must be that one.
    const now = await models.Robot.findById(robot._id, { host_key_sha256: 1 }).lean<RobotDoc>();
    if (now?.host_key_sha256 !== hostKeySha256) {
      client.end();
      throw new HostKeyMismatchError(`host key mismatch: ${robot._id} presented ${hostKeySha256}, pinned ${now?.host_key_sha256}`);
    }
  }
  return { client, hostKeySha256, pinnedNow: true };
}

/** Robot-level errors become non-retryable failures (retrying cannot fix them); others stay retryable. */
export function robotFailure(e: unknown): unknown {
  const as = (type: string) => ApplicationFailure.create({ message: (e as Error).message, type, nonRetryable: true });
  if (e instanceof HostKeyMismatchError) return as(ROBOT_FAILURE.hostKeyMismatch);
  if (e instanceof RobotUnreachableError) return as(ROBOT_FAILURE.unreachable);
  if (e instanceof RobotCredentialError) return as(ROBOT_FAILURE.credential);
  return e;
}

/** The robot's document; an unknown id is a non-retryable "unknown robot" failure. */
export async function loadRobot(models: Pick<OfflineModels, 'Robot'>, robotId: string): Promise<OfflineRobot> {
  const robot = await models.Robot.findById(robotId).lean<OfflineRobot>();
  if (!robot) throw ApplicationFailure.create({ message: `unknown robot ${robotId}`, type: ROBOT_FAILURE.unknownRobot, nonRetryable: true });
  return robot;
}

/** Connects to a loaded robot (pinning on first contact), runs `fn`, always closes; failures classified. */
export async function withConnection<T>(models: Pick<OfflineModels, 'Robot'>, robot: OfflineRobot, fn: (client: Client) => Promise<T>): Promise<T> {
  let client: Client;
  try {
    ({ client } = await connectOfflineRobot(models, robot));
  } catch (e) {
    throw robotFailure(e);
  }
  try {
    return await fn(client);
  } finally {
    client.end();
  }
}

/** Loads a robot, connects (pinning on first contact), runs `fn`, always closes; failures classified. */
export async function withRobot<T>(
  models: Pick<OfflineModels, 'Robot'>,
  robotId: string,
  fn: (robot: OfflineRobot, client: Client) => Promise<T>,
): Promise<T> {
  const robot = await loadRobot(models, robotId);
  return withConnection(models, robot, (client) => fn(robot, client));
}

export interface Beat {
  set(details: unknown): void;
  stop(): void;
}

/** At most one heartbeat call per this many ms from progress (a resume point is then at most this old). */
const BEAT_EVERY_MS = 250;

/**
 * Heartbeats every 2 s whatever the activity is doing (database reads, hashing, the robot's flush): a silent
 * activity would be timed out and run twice. Until this attempt has its own, the previous attempt's details
 * (its resume point) are what it sends, so a crash before the first write loses nothing.
 */
export function keepAlive(): Beat {
  let ctx: Context;
  try {
    ctx = Context.current();
  } catch {
    return { set: () => undefined, stop: () => undefined }; // called outside an activity (tests, scripts)
  }
  let details: unknown = ctx.info.heartbeatDetails;
  // Progress comes per file (5,000 calls for 5,000 small RFs). The SDK sends one heartbeat per throttle interval
  // anyway, but each call is a native call and a trace log record (~40 ms of the worker's CPU per 5,000): at
  // most one call per BEAT_EVERY_MS, and the newest details always follow within it.
  let last = 0;
  let trailing: NodeJS.Timeout | null = null;
  const send = () => {
    if (trailing) clearTimeout(trailing);
    trailing = null;
    last = Date.now();
    ctx.heartbeat(details);
  };
  const timer = setInterval(send, 2000);
  return {
    set: (d) => {
      details = d;
      const wait = last + BEAT_EVERY_MS - Date.now();
      if (wait <= 0) send();
      else trailing ??= setTimeout(send, wait);
    },
    stop: () => {
      clearInterval(timer);
      if (trailing) clearTimeout(trailing);
      trailing = null;
    },
  };
}
