// The MQTT bridge's Prometheus series: what comes in (per kind), what goes on to Temporal (report signals per job,
// batched rollout signals), what is dropped and why, and the backlog in hand (messages being handled per
// connection kind, rollout entries waiting for their window). Served by workers/mqtt-bridge.ts.
import { Counter, Gauge, type Registry } from 'prom-client';

export interface BridgeMetrics {
  messages: Counter<'kind'>;
  forwarded: Counter<'path'>;
  rolloutSignals: Counter;
  dropped: Counter<'reason'>;
  inHand: Gauge<'connection'>;
  rolloutPending: Gauge;
}

/** `rolloutPending` is read at each scrape from the bridge's rollout batcher. */
export function createBridgeMetrics(registry: Registry, rolloutPending: () => number): BridgeMetrics {
  const registers = [registry];
  return {
    messages: new Counter({ name: 'fleetsync_bridge_messages_total', help: 'MQTT messages received, by kind (state, presence)', labelNames: ['kind'], registers }),
    forwarded: new Counter({
      name: 'fleetsync_bridge_reports_forwarded_total',
      help: "Robots' reports passed on: path=job (a signal to the job's workflow), path=rollout (joined a rollout's batch)",
      labelNames: ['path'],
      registers,
    }),
    rolloutSignals: new Counter({ name: 'fleetsync_bridge_rollout_signals_total', help: 'Batched rolloutEvents signals delivered', registers }),
    dropped: new Counter({ name: 'fleetsync_bridge_dropped_total', help: 'Messages dropped, by reason (rate_limit, malformed, unknown_job, forged)', labelNames: ['reason'], registers }),
    inHand: new Gauge({ name: 'fleetsync_bridge_in_hand', help: 'Messages being handled now, by connection kind (lane, presence): the lane backlog', labelNames: ['connection'], registers }),
    rolloutPending: new Gauge({
      name: 'fleetsync_bridge_rollout_pending',
      help: 'Rollout reports and returns waiting for their batch window',
      registers,
      collect() {
        this.set(rolloutPending());
      },
    }),
  };
}
