// Naming and housekeeping of the bridge's state-report lanes (see the header of ota-bridge.ts for why lanes).
//
// Each lane is an MQTT connection with its own persistent session `<bridgeClientId>-<i>`, subscribed to the
// shared subscription `$share/<group>/ota/+/state`. Mosquitto keeps a shared-subscription member in the group
// while its session lives, even when it is offline, and keeps routing its share of messages into that session's
// queue. That is what makes a lane that dies mid-message lose nothing (it gets its queue back on reconnect), and
// also what makes lowering MQTT_BRIDGE_LANES dangerous: lanes no longer started would swallow 1/N of all reports
// until their sessions expire. drainStaleLane() retires such a session without losing what it holds.
import type { IConnackPacket, IPublishPacket, MqttClient } from 'mqtt';
import { topics } from '../../common/protocol';
import type { Logger } from '../../common/logger';

/** Client id of lane `index` of the bridge whose presence connection is `bridgeClientId`. */
export const laneClientId = (bridgeClientId: string, index: number): string => `${bridgeClientId}-${index}`;

/**
 * The share group is the bridge's client id: one group per bridge deployment. Two bridges in one group (e.g. the
 * demo stack and a test's bridge on the same broker) would split each other's reports between them.
 */
export function shareGroupFor(bridgeClientId: string): string {
  if (!/^[^/+#]+$/.test(bridgeClientId)) {
    throw new Error(`MQTT bridge client id "${bridgeClientId}" cannot name a shared-subscription group: it must not contain '/', '+' or '#'`);
  }
  return bridgeClientId;
}

/** The lanes' subscription: every robot's state, spread by the broker over the group's members. */
export const sharedStateFilter = (group: string): string => `$share/${group}/${topics.allStates}`;

export interface DrainStaleLaneOptions {
  /** Created with clean:false under the stale lane's client id and not yet connected (see drainStaleLane). */
  client: MqttClient;
  group: string;
  /** The bridge's message handler (OtaBridge.handle): a drained report is handled like any other. */
  handle: (topic: string, payload: Buffer) => Promise<void>;
  log: Logger;
  /** The session counts as drained once no message has arrived or been in hand for this long. */
  idleMs?: number;
}

export type DrainOutcome = 'no-session' | 'drained' | 'interrupted';

/**
 * Retires the session of a lane that is no longer started: takes it over, handles (ack after handling) what it
 * had queued, leaves the share group, and ends the session (DISCONNECT with session expiry 0). Until the
 * unsubscribe lands it still receives its share of live reports, which it handles the same way. When the
 * connection drops before the end, the session is kept (nothing lost) and the next bridge start tries again.
 *
 * The client must be created with clean:false and a non-zero session expiry: connecting to the session with
 * expiry 0 would forbid keeping it when the drain is interrupted (MQTT 5 does not allow 0 → non-zero later).
 */
export async function drainStaleLane(o: DrainStaleLaneOptions): Promise<DrainOutcome> {
  const { client } = o;
  const idleMs = o.idleMs ?? 1000;
  let inHand = 0;
  let lastActivity = Date.now();
  client.handleMessage = (packet: IPublishPacket, done) => {
    inHand++;
    lastActivity = Date.now();
    void o.handle(packet.topic, Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload)).finally(() => {
      inHand--;
      lastActivity = Date.now();
      done();
    });
  };
  const connack = await new Promise<IConnackPacket>((resolve, reject) => {
    client.once('connect', resolve);
    client.once('close', () => reject(new Error('connection closed before CONNACK')));
  }).catch(() => null);
  if (!connack) {
    client.end(true);
    return 'interrupted';
  }
  try {
    if (connack.sessionPresent) {
      await client.unsubscribeAsync(sharedStateFilter(o.group));
      // Queued messages arrive right after CONNACK (a broker's in-flight window at a time), so quiet for idleMs
      // with nothing in hand means the queue is empty: nothing new can be routed here after the UNSUBACK.
      while (inHand > 0 || Date.now() - lastActivity < idleMs) {
        if (!client.connected) throw new Error('connection lost while draining');
        await new Promise((r) => setTimeout(r, Math.min(100, idleMs)));
      }
    }
    await client.endAsync(false, { properties: { sessionExpiryInterval: 0 } });
    if (connack.sessionPresent) o.log.info({ clientId: client.options.clientId }, 'stale bridge lane drained and its session ended');
    return connack.sessionPresent ? 'drained' : 'no-session';
  } catch (err) {
    o.log.warn({ err, clientId: client.options.clientId }, 'stale bridge lane not drained; its session is kept for the next start');
    client.end(true);
    return 'interrupted';
  }
}
