// `npm run bench -- ota-rollout [--robots 1000] [--file-kib 1024] [--concurrency 1000] [--daemon-hosts 8] [--port-offset 0] [--reuse-data]`
//
// One rollout (POST /api/v1/rollouts) of a file to N simulated robots, each an OTA daemon with its own MQTT
// connection that really downloads, verifies (sha256, signature) and installs (daemons hosted a few hundred per
// process, bench/daemon-host.ts). Prints the time until every job is COMPLETED, p50/p95 job latency (rollout
// created → job COMPLETED stored), the worker's peak RSS, and the rollout workflow's history events per robot
// (every run of it, continue-as-new included). Baseline, same run: the Mosquitto-only floor, i.e. a deploy
// message to the same N robots (one MQTT connection each, their own credentials) and a state reply from each,
// with no orchestration, no database and no download.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import YAML from 'yaml';
import { connectMqtt, uniqueClientId } from '../activities/mqtt/connection';
import type { Config } from '../common/config';
import { topics } from '../common/protocol';
import type { RobotManifest } from '../infra/fleet';
import type { OtaJob } from '../common/models/ota';
import { stackDown } from '../infra/stack';
import { rolloutWorkflowId } from '../workflows/ota-rollout-contract';
import { overlayRolloutResults } from '../activities/db/ota-rollout-results';
import { Client, Connection } from '@temporalio/client';
import { fig, flag, peakRssMb, percentile, token, until } from './common';
import { startBenchSystem, stopChildren } from './harness';
import { formatTimeline, rolloutTimeline } from './rollout-timeline';

/** Deploy → state reply for every robot over bare MQTT; seconds from the first publish to the last reply. */
async function mosquittoFloor(cfg: Config, robots: readonly RobotManifest[]): Promise<number> {
  const clients: MqttClient[] = [];
  const cloud = await connectMqtt(cfg, { clientId: uniqueClientId('bench-floor') });
  try {
    for (const r of robots) {
      const conf = YAML.parse(fs.readFileSync(r.daemonConfig, 'utf8')) as { mqtt_username: string; mqtt_password: string };
      const c = await mqtt.connectAsync(cfg.mqtt.url, { clientId: conf.mqtt_username, username: conf.mqtt_username, password: conf.mqtt_password, protocolVersion: 5, clean: true, reconnectPeriod: 0 });
      await c.subscribeAsync(topics.deploy(r.id), { qos: 1 });
      c.on('message', (_t, payload) => {
        const { job_id } = JSON.parse(payload.toString()) as { job_id: string };
        c.publish(topics.state(r.id), JSON.stringify({ [job_id]: { status: 'COMPLETED', error_msg: null } }), { qos: 1 });
      });
      clients.push(c);
    }
    const replied = new Set<string>();
    cloud.on('message', (topic) => replied.add(topic));
    await cloud.subscribeAsync(topics.allStates, { qos: 1 });
    const t0 = performance.now();
    await Promise.all(
      robots.map((r) => cloud.publishAsync(topics.deploy(r.id), JSON.stringify({ job_id: `floor-${r.id}`, s3_bucket: 'files', s3_object_name: 'x', deploy_path: '/x' }), { qos: 1 })),
    );
    await until('every floor reply', () => replied.size === robots.length, 60000, 5);
    return (performance.now() - t0) / 1000;
  } finally {
    await Promise.allSettled([...clients, cloud].map((c) => c.endAsync()));
  }
}

export async function main(args: string[]): Promise<void> {
  const robots = flag(args, '--robots', 1000);
  const fileKib = flag(args, '--file-kib', 1024);
  const concurrency = flag(args, '--concurrency', robots);
  const hosts = flag(args, '--daemon-hosts', 8);
  // The bridge's state lanes at their maximum (production variable, README): more reports handled side by side.
  process.env.MQTT_BRIDGE_LANES ??= '32';
  // Fresh data directory per run unless --reuse-data (see startBenchSystem).
  const tSetup = Date.now();
  const { cfg, say, children, db } = await startBenchSystem(args, robots, hosts, !args.includes('--reuse-data'));
  const api = `${cfg.api.publicUrl}/api/v1`;
  const auth = { authorization: `Bearer ${await token(cfg)}` };
  const [worker, bridge] = children;
  // The worker's and the bridge's logs (per-activity timings: loadMs, publishMs, writeMs…) kept for reading after.
  for (const [c, name] of [[worker, 'worker'], [bridge, 'bridge']] as const) {
    const out = fs.createWriteStream(path.join(cfg.dataDir, 'logs', `${name}.log`));
    c.proc.stdout!.pipe(out);
    c.proc.stderr!.pipe(out);
  }
  let workerPeak = 0;
  const sampler = setInterval(() => (workerPeak = Math.max(workerPeak, peakRssMb(worker.proc.pid!))), 200);
  const connection = await Connection.connect({ address: cfg.temporal.address });
  const temporal = new Client({ connection, namespace: cfg.temporal.namespace });
  try {
    const bytes = crypto.randomBytes(fileKib * 1024);
    const sha = crypto.createHash('sha256').update(bytes).digest('hex');
    const form = new FormData();
    form.append('file_info_list', JSON.stringify({ file_list: [{ s3_bucket: 'files' }] }));
    form.append('files', new Blob([bytes]), 'rollout.bin');
    const up = await fetch(`${api}/file/upload`, { method: 'POST', headers: auth, body: form });
    const [{ s3_object_name: object }] = (await up.json()) as Array<{ s3_object_name: string }>;
    const run = Date.now().toString(36);
    const ids = db.fleet.map((r) => r.id);
    const fleetDir = path.dirname(path.dirname(db.fleet[0].root));
    const template = path.join(fleetDir, '{robot_id}', 'root', 'bench', `rollout-${run}.bin`);
    const tHosts = Date.now();
    await until(
      'all robots online',
      // One count over the (fresh) data directory's presence documents: a `$in` of 10,000 ids per poll was heavy.
      // A count refused under load (FerretDB busy with a fleet's presence) is just a "not yet".
      async () => ((await db.conn.models.RobotPresence.countDocuments({ online: true }).catch(() => 0)) as number) >= robots,
      Math.max(300000, robots * 60),
      500,
    );

    // Setup (stack, provisioning, daemons started) and the wait until the bridge has stored every robot online.
    const setupS = (tHosts - tSetup) / 1000;
    const onlineWaitS = (Date.now() - tHosts) / 1000;
    say(`setup ${setupS.toFixed(1)} s, then all ${robots} robots stored online after ${onlineWaitS.toFixed(1)} s`);
    say(`rollout of ${fileKib} KiB to ${robots} robots (concurrency ${concurrency})`);
    const t0 = Date.now();
    const res = await fetch(`${api}/rollouts`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ s3_object_name: object, deploy_path: template, target: { robot_ids: ids }, max_concurrency: concurrency }),
    });
    const created = (await res.json()) as { rollout_id: string };
    if (res.status !== 201) throw new Error(`POST /rollouts: ${res.status} ${JSON.stringify(created)}`);
    const rolloutId = created.rollout_id;
    let status = '';
    await until('rollout finished', async () => {
      const doc = await db.conn.models.OtaRollout.findById(rolloutId, { status: 1 }).lean();
      status = doc?.status ?? '';
      return status !== 'RUNNING' && status !== 'PAUSED';
    }, 1800000, 250);
    type Row = Pick<OtaJob, '_id' | 'status' | 'deployment_id' | 'timestamp' | 'finished_at'>;
    // Ended jobs' statuses are result rows (activities/db/ota-rollout-results.ts), applied to the documents.
    const docs = await db.conn.models.OtaJob.find({ deployment_id: rolloutId }, { status: 1, deployment_id: 1, timestamp: 1, finished_at: 1 }).lean<Row[]>();
    const rows = await overlayRolloutResults(db.conn.models.OtaRolloutResult, docs);
    const completed = rows.filter((r) => r.status === 'COMPLETED');
    const lastDone = Math.max(...rows.map((r) => (r.finished_at ?? new Date(0)).getTime()));
    // Per robot: rollout created → that robot's terminal status stored (stamped per write chunk of 50).
    const latencies = completed.map((r) => r.finished_at!.getTime() - t0).sort((a, b) => a - b);
    const verified = ids.filter((id) => {
      const f = template.split('{robot_id}').join(id);
      return fs.existsSync(f) && crypto.createHash('sha256').update(fs.readFileSync(f)).digest('hex') === sha;
    }).length;
    clearInterval(sampler);

    // Every run of the rollout's workflow (continue-as-new starts new ones under the same id).
    let events = 0;
    const runIds: string[] = [];
    for await (const wf of temporal.workflow.list({ query: `WorkflowId = "${rolloutWorkflowId(rolloutId)}"` })) {
      events += (await temporal.workflow.getHandle(wf.workflowId, wf.runId).describe()).historyLength;
      runIds.push(wf.runId);
    }
    const runs = runIds.length;
    const timeline = await rolloutTimeline(temporal, rolloutWorkflowId(rolloutId), runIds, t0);
    say(`timeline (s from the POST; activities scheduled → completed, signals with their entries):\n${formatTimeline(timeline)}`);

    // The floor: the daemons make way (same MQTT identities), then bare clients answer at once.
    await stopChildren(children.splice(3));
    const floorS = await mosquittoFloor(cfg, db.fleet);

    const allCompletedS = (lastDone - t0) / 1000;
    fig('robots', robots);
    fig('file_kib', fileKib);
    fig('setup_s', setupS);
    fig('fleet_online_wait_s', onlineWaitS);
    fig('rollout_status', status);
    fig('completed', completed.length);
    fig('verified_sha256', verified);
    fig('all_completed_s', allCompletedS);
    fig('p50_ms', percentile(latencies, 50) ?? -1);
    fig('p95_ms', percentile(latencies, 95) ?? -1);
    fig('worker_peak_rss_mb', workerPeak);
    fig('temporal_workflow_runs', runs);
    fig('temporal_history_events', events);
    fig('temporal_history_events_per_robot', events / robots);
    for (const [kind, { count, seconds }] of timeline.totals) {
      const key = kind.replace(/^signal:/, 'signal_').replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
      fig(`stage_${key}_count`, count);
      if (!kind.startsWith('signal:')) fig(`stage_${key}_s`, seconds);
    }
    fig('baseline_mosquitto_floor_s', floorS);
    fig('ratio_all_completed_vs_floor', allCompletedS / floorS);
    if (completed.length !== robots || verified !== robots) throw new Error('benchmark run had unfinished or failed jobs');
  } finally {
    clearInterval(sampler);
    await db.conn.close();
    await connection.close();
    await stopChildren(children);
    await stackDown(cfg);
  }
}
