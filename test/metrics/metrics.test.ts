// Prometheus endpoints of the three cloud processes, for real: the API (/metrics on its port), the worker (the
// Temporal SDK runtime's exporter on WORKER_METRICS_PORT) and the MQTT bridge (BRIDGE_METRICS_PORT). Each is
// scraped after it did some work, and the series an operator's dashboard (infra/grafana) reads must be there.
import fs from 'node:fs';
import path from 'node:path';
import type { MqttClient } from 'mqtt';
import { repoRoot } from '../../common/config';
import { connectMqtt, uniqueClientId } from '../../activities/mqtt/connection';
import { connectDb, type Db } from '../../common/db';
import { topics } from '../../common/protocol';
import { cfg, eventually, runTs, temporalClient, uniqueId, type ChildHandle } from '../helpers';
import { otaDeployment } from '../../workflows/ota-deployment';
import { otaWorkflowId } from '../../workflows/ota-contract';
import { stackProbe } from '../../workflows/stack-probe';
import { apiToken, freePort } from '../ota/system';

const TEST_DB = uniqueId('fleet_test_metrics').replace(/-/g, '_');
let db: Db;
let procs: ChildHandle[] = [];
let robot: MqttClient | undefined;
const ports = { api: 0, worker: 0, bridge: 0 };
let env: Record<string, string> = {};

beforeAll(async () => {
  db = await connectDb(cfg, TEST_DB);
  for (const k of ['api', 'worker', 'bridge'] as const) ports[k] = await freePort();
  env = {
    MONGO_DB: TEST_DB,
    TEMPORAL_TASK_QUEUE: uniqueId('metrics'),
    MQTT_BRIDGE_CLIENT_ID: uniqueClientId('test-metrics-bridge'),
    API_PORT: String(ports.api),
    API_PUBLIC_URL: `http://127.0.0.1:${ports.api}`,
    WORKER_METRICS_PORT: String(ports.worker),
    BRIDGE_METRICS_PORT: String(ports.bridge),
    LOG_LEVEL: 'info',
  };
  const worker = runTs('workers/main.ts', env);
  const bridge = runTs('workers/mqtt-bridge.ts', env);
  const api = runTs('api/main.ts', env);
  procs = [worker, bridge, api];
  await Promise.all([
    worker.waitForOutput('worker started', 90_000),
    bridge.waitForOutput('mqtt bridge started', 90_000),
    api.waitForOutput('OTA API listening', 90_000),
  ]);
}, 120_000);

afterAll(async () => {
  await Promise.allSettled([...procs.map((p) => p.kill()), robot?.endAsync()]);
  await db?.connection.dropDatabase();
  await db?.close();
});

const scrape = async (port: number): Promise<string> => {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  expect(res.status).toBe(200);
  return res.text();
};

test('API: request latency histogram by route, jobs and rollouts by status', async () => {
  const token = await apiToken({ role: 'viewer' });
  const res = await fetch(`http://127.0.0.1:${ports.api}/api/v1/jobs?limit=1`, { headers: { authorization: `Bearer ${token}` } });
  expect(res.status).toBe(200);
  const now = new Date();
  await db.models.OtaJob.create({
    _id: uniqueId('job'), robot_id: 'robot-metrics', deploy_path: '/opt/m.bin', s3_bucket: 'files', s3_object_name: 'm', file_name: 'm',
    sha256: 'a'.repeat(64), size: 1, status: 'FAILED', error_msg: 'x', deploy_msg: '{}', timestamp: now, updated_at: now, finished_at: now, workflow_id: 'ota-job-x',
  });
  const text = await scrape(ports.api);
  expect(text).toMatch(/fleetsync_http_request_duration_seconds_bucket\{[^}]*route="\/api\/v1\/jobs"[^}]*status="200"/);
  expect(text).toMatch(/fleetsync_ota_jobs\{status="FAILED",service="api"\} 1/);
  expect(text).toContain('# TYPE fleetsync_ota_rollouts gauge');
  expect(text).toContain('fleetsync_process_resident_memory_bytes');
});

test('worker: the Temporal SDK runtime metrics (task polls, slots, latencies)', async () => {
  // Some work for the worker: a job whose document does not exist ends FAILED after a workflow task or two and
  // two local activities, so the workflow task latency histograms have observations.
  const { client, close } = await temporalClient();
  try {
    const jobId = uniqueId('job-metrics');
    const result = await client.workflow.execute(otaDeployment, { taskQueue: env.TEMPORAL_TASK_QUEUE, workflowId: otaWorkflowId(jobId), args: [{ jobId, robotId: 'robot-metrics' }] });
    expect(result.status).toBe('FAILED');
    // otaDeployment runs its activities as local activities; the activity-task series need a remote one: the
    // stack probe's first activity (the probe is ended once the series are there).
    const probe = await client.workflow.start(stackProbe, {
      taskQueue: env.TEMPORAL_TASK_QUEUE,
      workflowId: uniqueId('probe-metrics'),
      args: [{ probeId: uniqueId('probe'), robotId: 'robot-metrics', uploadBytes: 1 }],
    });
    try {
      const text = await eventually('worker series', async () => {
        const t = await scrape(ports.worker);
        return /temporal_workflow_task_schedule_to_start_latency/.test(t) && /temporal_activity_schedule_to_start_latency/.test(t) ? t : undefined;
      }, 30_000);
      expect(text).toMatch(/temporal_\w+/);
      expect(text).toMatch(/task_queue="metrics-/);
    } finally {
      await probe.terminate('metrics test done').catch(() => undefined);
    }
  } finally {
    await close();
  }
});

test('bridge: messages, forwarded reports, drops, backlog in hand and rollout batches', async () => {
  robot = await connectMqtt(cfg, { clientId: uniqueClientId('test-metrics-robot') });
  const robotId = uniqueId('robot-metrics');
  await robot.publishAsync(topics.presence(robotId), 'online', { qos: 1 });
  await robot.publishAsync(topics.state(robotId), 'not json', { qos: 1 });
  const text = await eventually('bridge counted both', async () => {
    const t = await scrape(ports.bridge);
    return /fleetsync_bridge_messages_total\{kind="presence"[^}]*\} [1-9]/.test(t) && /fleetsync_bridge_dropped_total\{reason="malformed"[^}]*\} [1-9]/.test(t) ? t : undefined;
  }, 30_000);
  expect(text).toMatch(/fleetsync_bridge_messages_total\{kind="state"[^}]*\} [1-9]/);
  expect(text).toContain('# TYPE fleetsync_bridge_reports_forwarded_total counter');
  expect(text).toContain('# TYPE fleetsync_bridge_rollout_signals_total counter');
  expect(text).toMatch(/fleetsync_bridge_in_hand\{connection="lane"[^}]*\} 0/);
  expect(text).toMatch(/fleetsync_bridge_rollout_pending\{service="mqtt-bridge"\} 0/);
});

test('the Grafana dashboard reads only series these endpoints serve', async () => {
  const dashboard = fs.readFileSync(path.join(repoRoot, 'infra', 'grafana', 'fleetsync-ota.json'), 'utf8');
  const exprs = (JSON.parse(dashboard) as { panels: Array<{ targets: Array<{ expr: string }> }> }).panels.flatMap((p) => p.targets.map((t) => t.expr));
  const served = (await Promise.all([scrape(ports.api), scrape(ports.worker), scrape(ports.bridge)])).join('\n');
  const names = [...new Set(exprs.flatMap((e) => e.match(/\b(fleetsync|temporal)_\w+/g) ?? []))];
  expect(names.length).toBeGreaterThan(10);
  // A histogram's _bucket / _count series appear once it has observations; its # TYPE line names it always.
  const missing = names.filter((n) => !served.includes(n) && !served.includes(`# TYPE ${n.replace(/_(bucket|count|sum)$/, '')} `));
  expect(missing).toEqual([]);
});
