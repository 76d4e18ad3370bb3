// Composition root of the MQTT bridge (logic: workers/bridge/ota-bridge.ts). Only wiring lives here.
// The bridge holds a persistent MQTT session under a fixed client id (cfg.mqtt.bridgeClientId): reports that
// robots send while it is down wait at the broker and are delivered when it returns. Run one bridge per
// broker: a second process with the same client id would take the session over from the first.
import { Client, Connection } from '@temporalio/client';
import { loadConfig } from '../common/config';
import { connectDb } from '../common/db';
import { createLogger } from '../common/logger';
import { createMqttClient, waitForConnect } from '../activities/mqtt/connection';
import { OtaBridge } from './bridge/ota-bridge';

/** How long the broker keeps the bridge's subscriptions and queued reports while the bridge is away. */
const SESSION_EXPIRY_SECONDS = 24 * 3600;

async function main(): Promise<void> {
  const cfg = loadConfig();
  const log = createLogger('mqtt-bridge', cfg.logLevel);
  const db = await connectDb(cfg);
  const connection = await Connection.connect({ address: cfg.temporal.address });
  const temporal = new Client({ connection, namespace: cfg.temporal.namespace });

  // The bridge installs its message handler on the client before it connects (queued messages come at once).
  const mqtt = createMqttClient(cfg, {
    clientId: cfg.mqtt.bridgeClientId,
    clean: false,
    sessionExpirySeconds: SESSION_EXPIRY_SECONDS,
    log,
  });
  const bridge = new OtaBridge({ mqtt, models: db.models, workflows: temporal.workflow, log });
  await waitForConnect(mqtt);
  await bridge.start();
  log.info({ clientId: cfg.mqtt.bridgeClientId, namespace: cfg.temporal.namespace }, 'mqtt bridge started');

  await new Promise<void>((resolve) => {
    for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => resolve());
  });
  log.info('mqtt bridge stopping');
  bridge.stop();
  // Messages not yet acknowledged stay in the session and are redelivered to the next bridge.
  await mqtt.endAsync().catch((err: unknown) => log.warn({ err }, 'mqtt close failed'));
  await Promise.allSettled([db.close(), connection.close()]);
  log.info('mqtt bridge stopped');
}

main().catch((err: unknown) => {
  createLogger('mqtt-bridge').fatal({ err }, 'mqtt bridge failed');
  process.exit(1);
});
