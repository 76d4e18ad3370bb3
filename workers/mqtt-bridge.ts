// Composition root of the MQTT bridge (logic: workers/bridge/ota-bridge.ts). Only wiring lives here.
// The bridge holds persistent MQTT sessions under fixed client ids: its main connection (cfg.mqtt.bridgeClientId,
// presence) and one per state-report lane (`<bridgeClientId>-<i>`, i < cfg.mqtt.bridgeLanes). Reports that robots
// send while it is down wait at the broker and are delivered when it returns. Run one bridge per broker: a second
// process with the same client id would take the sessions over from the first.
import { Client, Connection } from '@temporalio/client';
import { loadConfig, MQTT_BRIDGE_MAX_LANES } from '../common/config';
import { connectDb } from '../common/db';
import { createLogger } from '../common/logger';
import { createMqttClient, waitForConnect } from '../activities/mqtt/connection';
import { drainStaleLane, laneClientId, shareGroupFor } from './bridge/lanes';
import { OtaBridge } from './bridge/ota-bridge';
import { createBridgeMetrics } from './bridge/metrics';
import { createRegistry, serveMetrics } from '../common/metrics';

/** How long the broker keeps the bridge's subscriptions and queued reports while the bridge is away. */
const SESSION_EXPIRY_SECONDS = 24 * 3600;

async function main(): Promise<void> {
  const cfg = loadConfig();
  const log = createLogger('mqtt-bridge', cfg.logLevel);
  const group = shareGroupFor(cfg.mqtt.bridgeClientId);
  const db = await connectDb(cfg);
  const connection = await Connection.connect({ address: cfg.temporal.address });
  const temporal = new Client({ connection, namespace: cfg.temporal.namespace });

  // The bridge installs its message handlers on the clients before they connect (queued messages come at once).
  const persistent = (clientId: string, quiet = false) =>
    createMqttClient(cfg, { clientId, clean: false, sessionExpirySeconds: SESSION_EXPIRY_SECONDS, log: quiet ? undefined : log });
  const mqtt = persistent(cfg.mqtt.bridgeClientId);
  const lanes = Array.from({ length: cfg.mqtt.bridgeLanes }, (_, i) => persistent(laneClientId(cfg.mqtt.bridgeClientId, i)));
  const registry = createRegistry('mqtt-bridge');
  // The bridge exists only once the metrics do: the gauge reads it at scrape time.
  let bridge: OtaBridge | null = null;
  const metrics = createBridgeMetrics(registry, () => bridge?.rolloutPending() ?? 0);
  bridge = new OtaBridge({ mqtt, stateLanes: lanes, shareGroup: group, models: db.models, workflows: temporal.workflow, log, metrics });
  const metricsServer = cfg.metrics.bridgePort
    ? await serveMetrics(registry, cfg.metrics.bridgePort, cfg.metrics.host).catch((err: unknown) => {
        log.warn({ err, port: cfg.metrics.bridgePort }, 'metrics port unavailable: this bridge runs without its /metrics endpoint');
        return null;
      })
    : null;
  await Promise.all([mqtt, ...lanes].map((c) => waitForConnect(c)));
  await bridge.start();

  // Lanes of an earlier run with more of them (MQTT_BRIDGE_LANES lowered) are still members of the group and
  // would keep queueing their share of reports: drain and end them, next to the live lanes so nothing waits.
  const stale = Array.from({ length: MQTT_BRIDGE_MAX_LANES - cfg.mqtt.bridgeLanes }, (_, k) => {
    // Quiet: up to 31 short connections per start; drainStaleLane logs what matters (a drain, an interruption).
    const client = persistent(laneClientId(cfg.mqtt.bridgeClientId, cfg.mqtt.bridgeLanes + k), true);
    return { client, drained: drainStaleLane({ client, group, handle: (t, p) => bridge.handle(t, p), log }) };
  });
  log.info({ clientId: cfg.mqtt.bridgeClientId, lanes: lanes.length, namespace: cfg.temporal.namespace, metricsPort: cfg.metrics.bridgePort || null }, 'mqtt bridge started');

  await new Promise<void>((resolve) => {
    for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => resolve());
  });
  log.info('mqtt bridge stopping');
  await bridge.flush();
  bridge.stop();
  // Messages not yet acknowledged stay in the sessions and are redelivered to the next bridge (a stale lane's
  // session too: it is ended only once drained).
  for (const s of stale) s.client.end(true);
  await Promise.allSettled(stale.map((s) => s.drained));
  await Promise.all([mqtt, ...lanes].map((c) => c.endAsync().catch((err: unknown) => log.warn({ err }, 'mqtt close failed'))));
  await Promise.allSettled([db.close(), connection.close(), new Promise((r) => (metricsServer ? metricsServer.close(r) : r(undefined)))]);
  log.info('mqtt bridge stopped');
}

main().catch((err: unknown) => {
  createLogger('mqtt-bridge').fatal({ err }, 'mqtt bridge failed');
  process.exit(1);
});
