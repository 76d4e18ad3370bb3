// MQTT 5 connection and publish helpers for cloud processes (workers, bridge). Cloud processes connect to the
// broker's cloud listener, where each picks its own client id: two processes sharing one would keep kicking
// each other off (session takeover), so ids are unique per process unless a persistent session is wanted.
import crypto from 'node:crypto';
import mqtt, { ErrorWithReasonCode, type IClientPublishOptions, type MqttClient } from 'mqtt';
import type { Config } from '../../common/config';
import type { Logger } from '../../common/logger';

export interface MqttConnectOptions {
  clientId: string;
  /** false + sessionExpirySeconds: the broker keeps subscriptions and queued QoS 1 messages while we are away. */
  clean?: boolean;
  sessionExpirySeconds?: number;
  /** How long to wait for the first CONNACK before giving up (reconnects after that are automatic). */
  connectTimeoutMs?: number;
  log?: Logger;
  /** Overrides for tests (e.g. a robot listener URL); defaults to cfg.mqtt. */
  url?: string;
  username?: string;
  password?: string;
}

/** `<prefix>-<pid>-<random>`: unique per process and per call, e.g. `cloud-worker-4242-9f1c2a`. */
export const uniqueClientId = (prefix: string): string => `${prefix}-${process.pid}-${crypto.randomBytes(3).toString('hex')}`;

export class MqttPublishError extends Error {
  override name = 'MqttPublishError';
  constructor(
    message: string,
    readonly reasonCode?: number,
  ) {
    super(message);
  }
}

/**
 * Creates an MQTT 5 client (connecting in the background, reconnecting automatically) and returns it at once,
 * before any packet arrives: a subscriber with a persistent session installs its message handler here, since
 * the broker delivers queued messages straight after CONNACK. Most callers want connectMqtt.
 */
export function createMqttClient(cfg: Config, opts: MqttConnectOptions): MqttClient {
  const log = opts.log;
  const client = mqtt.connect(opts.url ?? cfg.mqtt.cloudUrl, {
    protocolVersion: 5,
    clientId: opts.clientId,
    username: opts.username ?? cfg.mqtt.username,
    password: opts.password ?? cfg.mqtt.password,
    clean: opts.clean ?? true,
    reconnectPeriod: 1000,
    connectTimeout: 10_000,
    keepalive: 60,
    ...(opts.sessionExpirySeconds !== undefined ? { properties: { sessionExpiryInterval: opts.sessionExpirySeconds } } : {}),
  });
  // An EventEmitter without an 'error' listener throws: a broker restart must be a log line, not a crash.
  client.on('error', (err) => log?.warn({ err: err.message, clientId: opts.clientId }, 'mqtt error'));
  client.on('offline', () => log?.warn({ clientId: opts.clientId }, 'mqtt offline, reconnecting'));
  client.on('reconnect', () => log?.debug({ clientId: opts.clientId }, 'mqtt reconnecting'));
  client.on('connect', (ack) => log?.info({ clientId: opts.clientId, sessionPresent: ack.sessionPresent }, 'mqtt connected'));
  return client;
}

/** Resolves on the client's first CONNACK; rejects (and ends the client) on refusal or after `timeoutMs`. */
export async function waitForConnect(client: MqttClient, timeoutMs = 30_000): Promise<void> {
  if (client.connected) return;
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => done(new Error(`MQTT: no connection within ${timeoutMs} ms`)), timeoutMs);
      const onConnect = () => done();
      // A refused CONNACK (bad credentials, not authorised) will not get better by retrying: fail now.
      const onError = (err: Error) => {
        if (err instanceof ErrorWithReasonCode) done(err);
      };
      function done(err?: Error) {
        clearTimeout(timer);
        client.off('connect', onConnect);
        client.off('error', onError);
        if (err) reject(err);
        else resolve();
      }
      client.on('connect', onConnect);
      client.on('error', onError);
    });
  } catch (err) {
    client.end(true);
    throw err;
  }
}

/** Opens an MQTT 5 client and resolves once the broker accepted it; reconnects automatically afterwards. */
export async function connectMqtt(cfg: Config, opts: MqttConnectOptions): Promise<MqttClient> {
  const client = createMqttClient(cfg, opts);
  await waitForConnect(client, opts.connectTimeoutMs);
  return client;
}

export interface PublishQos1Options {
  /** MQTT 5 message expiry: the broker drops the message if it is not delivered within this many seconds. */
  messageExpirySeconds?: number;
  retain?: boolean;
  /** How long to wait for the PUBACK. */
  timeoutMs?: number;
}

/**
 * Publishes with QoS 1 and resolves on the broker's PUBACK; rejects on a failure reason code (>= 0x80, e.g.
 * 0x87 "not authorised" for a topic outside the ACL), when disconnected, or when no PUBACK comes in time.
 * Never call this (awaiting) from inside an MQTT message handler of the same client: mqtt.js processes
 * incoming packets one at a time, so the PUBACK would queue behind the handler that waits for it.
 */
export async function publishQos1(client: MqttClient, topic: string, payload: string | Buffer, opts: PublishQos1Options = {}): Promise<void> {
  // Fail fast while disconnected: the caller (an activity) retries with backoff instead of piling up a queue.
  if (!client.connected) throw new MqttPublishError(`MQTT: not connected, cannot publish to ${topic}`);
  const publishOpts: IClientPublishOptions = {
    qos: 1,
    retain: opts.retain ?? false,
    ...(opts.messageExpirySeconds !== undefined ? { properties: { messageExpiryInterval: opts.messageExpirySeconds } } : {}),
  };
  const timeoutMs = opts.timeoutMs ?? 10_000;
  let timer: NodeJS.Timeout | undefined;
  try {
    const packet = await Promise.race([
      client.publishAsync(topic, payload, publishOpts),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new MqttPublishError(`MQTT: no PUBACK for ${topic} within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
    // mqtt.js already rejects most failure codes; this keeps the contract explicit whatever its version does.
    const reasonCode = packet && 'reasonCode' in packet ? packet.reasonCode : undefined;
    if (reasonCode !== undefined && reasonCode >= 0x80) {
      throw new MqttPublishError(`MQTT: publish to ${topic} refused with reason code 0x${reasonCode.toString(16)}`, reasonCode);
    }
  } catch (err) {
    if (err instanceof ErrorWithReasonCode) {
      throw new MqttPublishError(`MQTT: publish to ${topic} refused: ${err.message} (0x${err.code.toString(16)})`, err.code);
    }
    throw err;
  } finally {
    clearTimeout(timer);
  }
}
