// `npm run bench -- ota-fleet [--robots 200] [--file-mib 1] [--rss-file-mib 1024] [--concurrency 16] [--port-offset 0]`
//
// 1. A 1 MiB file deployed to N simulated robots, each an OTA daemon with its own MQTT connection (hosted
//    in a few processes): time until all are COMPLETED, p50/p95 job latency (job created → COMPLETED stored),
//    jobs per second. Baseline, same run: curl fetching the same object N times (16 at a time), i.e. the bare
//    transfer with no orchestration at all.
// 2. One real daemon process, as a robot runs it (dist/ota-daemon.cjs under plain node, daemon/build.ts),
//    installing a large file (1 GiB): its peak RSS (VmHWM). Baseline: curl downloading the same object to disk.
// It runs on its own stack (own ports, data under .data/bench) so it never disturbs `npm start` or the tests.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { createS3Client } from '../activities/s3/client';
import { overlayRolloutResults } from '../activities/db/ota-rollout-results';
import type { OtaJob } from '../common/models/ota';
import { stackDown } from '../infra/stack';
import { runningPid, stackPaths } from '../infra/proc';
import { Client, Connection } from '@temporalio/client';
import { otaWorkflowId } from '../workflows/ota-contract';
import { buildDaemonBundle, DAEMON_NODE_FLAGS } from '../daemon/build';
import {
  cpuSeconds,
  currentRssMb,
  curl,
  eventMs as ms,
  fig,
  flag,
  peakRssMb,
  percentile,
  randomFile,
  runPool,
  spawnProcess,
  token,
  until,
  uploadWithCurl,
  waitOutput,
} from './common';
import { startBenchSystem, type BenchSystem } from './harness';

/**
 * Best recorded figure of the reference service (the Python/FastAPI OTA service this project replaces) for this
 * burst, 200 robots × 1 MiB, with its robot filter fixed: /work/shared/notes/ota-file-service.md §8 records 30–44 s
 * on this machine kind; 30 is its best. It is quoted, not run in the same run: its code may not be committed to
 * this repository and the benchmark machines cannot fetch it, so the ratio below compares against that record.
 */
const REFERENCE_RECORDED_200_S = 30;

type Row = Pick<OtaJob, '_id' | 'status' | 'timestamp' | 'finished_at' | 'workflow_id' | 'deployment_id'>;

/** Per-stage times (ms from the job's creation) of one job, from its workflow's history. */
interface Stages {
  wfStart: number;
  dispatchStart?: number;
  dispatchDone?: number;
  firstReport?: number;
  lastReport?: number;
  finishDone?: number;
  end?: number;
  events: number;
  activities: number;
  localActivities: number;
  signals: number;
  tasks: number;
}

/** What marks a stage in a history: a job's own otaDeployment, or the batch workflow of batched single deploys. */
const DISPATCH = new Set(['dispatchDeploy', 'dispatchRolloutBatch']);
const REPORT = new Set(['robotReport', 'rolloutEvents']);

/**
 * Where a job's time went: its workflow's history read back (event times are the Temporal server's clock). A
 * batch's history serves all its jobs: `jobsInRun` divides its counts (events, tasks...) into per-job costs.
 */
async function jobStages(client: Client, workflowId: string, createdMs: number, jobsInRun = 1): Promise<Stages> {
  const events = (await client.workflow.getHandle(workflowId).fetchHistory()).events ?? [];
  const at = (i: number) => ms(events[i]?.eventTime) - createdMs;
  const s: Stages = { wfStart: at(0), events: events.length, activities: 0, localActivities: 0, signals: 0, tasks: 0 };
  const names = new Map<number, string>();
  events.forEach((e, i) => {
    const sched = e.activityTaskScheduledEventAttributes;
    if (sched) {
      s.activities++;
      names.set(Number(e.eventId), sched.activityType?.name ?? '');
    }
    const started = e.activityTaskStartedEventAttributes;
    if (started && DISPATCH.has(names.get(Number(started.scheduledEventId)) ?? '')) s.dispatchStart ??= at(i);
    const done = e.activityTaskCompletedEventAttributes;
    if (done && DISPATCH.has(names.get(Number(done.scheduledEventId)) ?? '')) s.dispatchDone ??= at(i);
    if (done && ['finishJob', 'applyRolloutEvents'].includes(names.get(Number(done.scheduledEventId)) ?? '')) s.finishDone = at(i);
    if (e.workflowExecutionSignaledEventAttributes) {
      s.signals++;
      if (REPORT.has(e.workflowExecutionSignaledEventAttributes.signalName ?? '')) {
        s.firstReport ??= at(i);
        s.lastReport = at(i);
      }
    }
    if (e.workflowTaskCompletedEventAttributes) s.tasks++;
    // Local activities (lean runs): a marker each, recorded when the workflow task that ran it completed; the
    // first is dispatchDeploy, a later one finishJob.
    if (e.markerRecordedEventAttributes?.markerName === 'core_local_activity') {
      s.localActivities++;
      if (s.localActivities === 1) s.dispatchDone = at(i);
      else s.finishDone = at(i);
    }
    if (e.workflowExecutionCompletedEventAttributes) s.end = at(i);
  });
  for (const k of ['events', 'activities', 'localActivities', 'signals', 'tasks'] as const) s[k] /= jobsInRun;
  return s;
}

/** One burst of `robots` single deploys; prints its figures prefixed `prefix` and returns all_completed_s. */
async function burst(sys: BenchSystem, opts: { robots: number; concurrency: number; object: string; sha: string; prefix: string }): Promise<number> {
  const { cfg, say, children, db } = sys;
  const { robots, concurrency, object, sha, prefix } = opts;
  const api = `${cfg.api.publicUrl}/api/v1`;
  const auth = { authorization: `Bearer ${await token(cfg)}` };
  const run = Date.now().toString(36);
  const targets = db.fleet.map((r) => path.join(r.root, 'bench', `fleet-${run}.bin`));
  say(`${prefix || 'burst'}: deploying to ${robots} robots (${concurrency} requests in flight)`);
  const jobIds: string[] = [];
  // Where the CPU goes while the burst runs (2 cores = 200 %): the cloud's processes and the stack's servers.
  const [worker, bridge, apiProc] = children;
  const profiled: Record<string, number | null> = {
    worker: worker.proc.pid ?? null,
    bridge: bridge.proc.pid ?? null,
    api: apiProc.proc.pid ?? null,
    ...Object.fromEntries(['temporal', 'ferretdb', 'mosquitto', 'versitygw'].map((n) => [n, runningPid(stackPaths(cfg), n)])),
  };
  const cpuAt = () => Object.fromEntries(Object.entries(profiled).map(([n, pid]) => [n, pid ? cpuSeconds(pid) : 0]));
  const cpu0 = cpuAt();
  const commands0 = await ferretCommands(db.conn);
  const t0 = Date.now();
  say(`${prefix || 'burst'}: clock starts at ${t0}`);
  await runPool(robots, concurrency, async (i) => {
    const q = new URLSearchParams({ robot_id: db.fleet[i].id, s3_bucket: 'files', s3_object_name: object, deploy_path: targets[i] });
    const res = await fetch(`${api}/file/deploy_from_s3?${q}`, { method: 'POST', headers: auth });
    const body = (await res.json()) as { job_id: string };
    if (res.status !== 200) throw new Error(`deploy: ${res.status} ${JSON.stringify(body)}`);
    jobIds.push(body.job_id);
  });
  const requestsDoneS = (Date.now() - t0) / 1000;
  // Polled once a second, finished jobs not asked again: every filter is a collection scan on FerretDB, and the
  // bench must not be what loads the database (finished_at comes from the job, so the figure does not depend on it).
  // Through job_state, as a client would see them: a job archived once finished is still found there.
  const done = new Map<string, Row>();
  await until('all jobs terminal', async () => {
    const open = jobIds.filter((id) => !done.has(id));
    for (const r of await findJobs(db.conn, open)) if (r.finished_at) done.set(r._id, r);
    return done.size === robots;
  }, 600000, 1000);
  const rows = [...done.values()];
  const cpu1 = cpuAt();
  const commands1 = await ferretCommands(db.conn);
  const burstS = (Date.now() - t0) / 1000;
  const completed = rows.filter((r) => r.status === 'COMPLETED');
  // Temporal's cost per job and where each job's time went: the histories of a sample of the jobs.
  const connection = await Connection.connect({ address: cfg.temporal.address });
  const client = new Client({ connection, namespace: cfg.temporal.namespace });
  const byId = new Map(rows.map((r) => [r._id, r]));
  const sample = jobIds.filter((_, i) => i % Math.max(1, Math.floor(robots / 40)) === 0);
  // Jobs per run: one for a job's own workflow, the batch's size for batched single deploys.
  const perRun = new Map<string, number>();
  for (const r of rows) perRun.set(r.workflow_id, (perRun.get(r.workflow_id) ?? 0) + 1);
  const stages = await Promise.all(
    sample.map((id) => {
      const r = byId.get(id)!;
      return jobStages(client, r.workflow_id ?? otaWorkflowId(id), r.timestamp.getTime(), perRun.get(r.workflow_id) ?? 1);
    }),
  );
  fig(`${prefix}workflow_runs`, perRun.size);
  await connection.close();
  const lastDone = Math.max(...rows.map((r) => r.finished_at!.getTime()));
  const allCompletedS = (lastDone - t0) / 1000;
  const latencies = rows.map((r) => r.finished_at!.getTime() - r.timestamp.getTime()).sort((a, b) => a - b);
  const verified = targets.filter((t) => fs.existsSync(t) && crypto.createHash('sha256').update(fs.readFileSync(t)).digest('hex') === sha).length;
  const avg = (f: (s: Stages) => number) => stages.reduce((a, s) => a + f(s), 0) / Math.max(1, stages.length);
  const p50 = (f: (s: Stages) => number | undefined) => {
    const v = stages.map(f).filter((x): x is number => x !== undefined).sort((a, b) => a - b);
    return v.length ? percentile(v, 50) : -1;
  };
  const k = (name: string) => `${prefix}${name}`;
  fig(k('completed'), completed.length);
  fig(k('verified_sha256'), verified);
  fig(k('deploy_requests_s'), requestsDoneS);
  fig(k('all_completed_s'), allCompletedS);
  fig(k('p50_ms'), percentile(latencies, 50));
  fig(k('p95_ms'), percentile(latencies, 95));
  fig(k('jobs_per_s'), robots / allCompletedS);
  fig(k('temporal_history_events_per_job'), avg((s) => s.events));
  fig(k('workflow_tasks_per_job'), avg((s) => s.tasks));
  fig(k('activities_per_job'), avg((s) => s.activities));
  fig(k('local_activities_per_job'), avg((s) => s.localActivities));
  fig(k('signals_per_job'), avg((s) => s.signals));
  // p50 of each stage, in ms from the job's creation (the API's insert): where a job waits.
  fig(k('stage_p50_ms_workflow_started'), p50((s) => s.wfStart));
  fig(k('stage_p50_ms_dispatch_started'), p50((s) => s.dispatchStart));
  fig(k('stage_p50_ms_dispatch_published'), p50((s) => s.dispatchDone));
  fig(k('stage_p50_ms_first_report'), p50((s) => s.firstReport));
  fig(k('stage_p50_ms_last_report'), p50((s) => s.lastReport));
  fig(k('stage_p50_ms_finish_stored'), p50((s) => s.finishDone));
  fig(k('stage_p50_ms_workflow_closed'), p50((s) => s.end));
  for (const n of Object.keys(profiled)) fig(k(`cpu_pct_${n}`), ((cpu1[n] - cpu0[n]) * 100) / burstS);
  // Database statements per job during the burst, by command, as the server counted them (all clients, the
  // benchmark's own polling included): FerretDB scans a collection per filter, so this is the cost that scales.
  for (const [cmd, n] of Object.entries(commands1)) {
    const d = n - (commands0[cmd] ?? 0);
    if (d > 0 && ['find', 'insert', 'update', 'delete', 'findAndModify', 'aggregate', 'count'].includes(cmd)) fig(k(`db_${cmd}_per_job`), d / robots);
  }
  fig(k('reference_recorded_200_s'), REFERENCE_RECORDED_200_S);
  fig(k('vs_reference_recorded'), allCompletedS / REFERENCE_RECORDED_200_S);
  if (completed.length !== robots || verified !== robots) throw new Error('benchmark run had failed jobs');
  return allCompletedS;
}

/** FerretDB's count of each command it has run since it started (serverStatus metrics.commands), by command. */
async function ferretCommands(conn: BenchSystem['db']['conn']): Promise<Record<string, number>> {
  const s = (await conn.connection.db!.admin().command({ serverStatus: 1 })) as { metrics?: { commands?: Record<string, { total?: number }> } };
  return Object.fromEntries(Object.entries(s.metrics?.commands ?? {}).map(([k, v]) => [k, Number(v.total ?? 0)]));
}

/** Jobs by id, wherever they are stored now (the live collection or, once finished, the archive). */
async function findJobs(conn: BenchSystem['db']['conn'], ids: string[]): Promise<Row[]> {
  const fields = { status: 1, timestamp: 1, finished_at: 1, workflow_id: 1, deployment_id: 1 };
  // A batched job's end is a result row until the archiver folds it in (activities/db/ota-rollout-results.ts).
  const live = await overlayRolloutResults(conn.models.OtaRolloutResult, await conn.models.OtaJob.find({ _id: { $in: ids } }, fields).lean<Row[]>());
  const found = new Set(live.map((r) => r._id));
  const rest = ids.filter((id) => !found.has(id));
  const archived = rest.length ? await conn.models.OtaJobArchive.find({ _id: { $in: rest } }, fields).lean<Row[]>() : [];
  return [...live, ...archived];
}

export async function main(args: string[]): Promise<void> {
  const robots = flag(args, '--robots', 200);
  const fileMib = flag(args, '--file-mib', 1);
  const rssFileMib = flag(args, '--rss-file-mib', 1024);
  const concurrency = flag(args, '--concurrency', 16);
  // --runs N: N bursts one after the other on the same stack and data directory (the 2nd and later show whether
  // a grown database slows the path down). Each prints its figures prefixed runK_; the plain keys are run 1's.
  const runs = flag(args, '--runs', 1);
  // --port-offset moves every port of the benchmark's stack (two benchmarks side by side, or a busy port).
  // A fresh data directory unless --reuse-data, so a run does not depend on what earlier runs left there.
  const sys = await startBenchSystem(args, robots, undefined, !args.includes('--reuse-data'));
  const { env, cfg, say, children, db } = sys;
  // The cloud processes' logs (the API's "deploy batch stored/started" lines time each commit) kept for reading after.
  for (const [c, name] of [[children[0], 'worker'], [children[1], 'bridge'], [children[2], 'api']] as const) {
    const out = fs.createWriteStream(path.join(cfg.dataDir, 'logs', `${name}.log`));
    c.proc.stdout!.pipe(out);
    c.proc.stderr!.pipe(out);
  }
  const api = `${cfg.api.publicUrl}/api/v1`;
  const auth = { authorization: `Bearer ${await token(cfg)}` };
  const s3 = createS3Client(cfg);

  try {
    // --- 1. the fleet deployment ---------------------------------------------------------------------
    const bytes = crypto.randomBytes(fileMib * 1024 * 1024);
    const sha = crypto.createHash('sha256').update(bytes).digest('hex');
    const form = new FormData();
    form.append('file_info_list', JSON.stringify({ file_list: [{ s3_bucket: 'files' }] }));
    form.append('files', new Blob([bytes]), 'fleet.bin');
    const up = await fetch(`${api}/file/upload`, { method: 'POST', headers: auth, body: form });
    const [{ s3_object_name: object }] = (await up.json()) as Array<{ s3_object_name: string }>;
    const run = Date.now().toString(36);
    const targets = db.fleet.map((r) => path.join(r.root, 'bench', `fleet-${run}.bin`));
    // Robots must be online (presence stored) before the clock starts: this measures deployment, not boot.
    await until('all robots online', async () => (await db.conn.models.RobotPresence.countDocuments({ online: true, _id: { $in: db.fleet.map((r) => r.id) } })) === robots, 60000, 250);

    fig('robots', robots);
    fig('file_mib', fileMib);
    const perRun: number[] = [];
    for (let r = 1; r <= runs; r++) {
      perRun.push(await burst(sys, { robots, concurrency, object, sha, prefix: r === 1 ? '' : `run${r}_` }));
      // Between runs, as in production between bursts: the API archives finished jobs (api/ota/archiver.ts).
      if (r < runs) await new Promise((res) => setTimeout(res, flag(args, '--pause-s', 15) * 1000));
    }
    if (runs > 1) fig('all_completed_s_per_run', perRun.map((x) => x.toFixed(3)).join(','));

    // Baseline: the same object fetched by curl to each robot's folder, as many at once as the API calls above.
    const url = await getSignedUrl(s3, new GetObjectCommand({ Bucket: 'files', Key: object }), { expiresIn: 3600 });
    const curlS = await runPool(robots, concurrency, async (i) => {
      const r = await curl(['-o', `${targets[i]}.curl`, url]);
      if (r.code !== 0) throw new Error(`curl exited ${r.code}`);
    });
    targets.forEach((t) => fs.rmSync(`${t}.curl`, { force: true }));

    // --- 2. the daemon's memory while installing a large file -----------------------------------------
    for (const c of children.splice(3)) {
      c.proc.kill('SIGTERM');
      await new Promise((r) => c.proc.once('exit', r));
    }
    const bigFile = path.join(cfg.dataDir, `big-${run}.bin`);
    const bigSha = randomFile(bigFile, rssFileMib);
    say(`uploading ${rssFileMib} MiB through the API`);
    const bigObject = await uploadWithCurl(api, auth.authorization, bigFile);
    const robot = db.fleet[0];
    // The artifact a robot runs: the esbuild bundle under plain node with the daemon's flags (daemon/build.ts).
    const bundle = await buildDaemonBundle();
    const daemon = spawnProcess(process.execPath, [...DAEMON_NODE_FLAGS, bundle, '--config', robot.daemonConfig], env);
    children.push(daemon);
    await waitOutput(daemon, 'connected to the broker');
    await new Promise((r) => setTimeout(r, 2000));
    const daemonIdle = currentRssMb(daemon.proc.pid!);
    const bigTarget = path.join(robot.root, 'bench', `big-${run}.bin`);
    let daemonPeak = 0;
    const sampler = setInterval(() => (daemonPeak = Math.max(daemonPeak, peakRssMb(daemon.proc.pid!))), 50);
    const tBig = Date.now();
    const q = new URLSearchParams({ robot_id: robot.id, s3_bucket: 'files', s3_object_name: bigObject, deploy_path: bigTarget });
    const dep = (await (await fetch(`${api}/file/deploy_from_s3?${q}`, { method: 'POST', headers: auth })).json()) as { job_id: string };
    let bigStatus = '';
    await until('large job terminal', async () => {
      const [job] = await findJobs(db.conn, [dep.job_id]);
      bigStatus = job?.status ?? '';
      return Boolean(job?.finished_at);
    }, 900000, 250);
    clearInterval(sampler);
    const daemonBigS = (Date.now() - tBig) / 1000;
    const bigOk = bigStatus === 'COMPLETED' && crypto.createHash('sha256').update(fs.readFileSync(bigTarget)).digest('hex') === bigSha;
    const bigUrl = await getSignedUrl(s3, new GetObjectCommand({ Bucket: 'files', Key: bigObject }), { expiresIn: 3600 });
    const tCurl = Date.now();
    const curlBig = await curl(['-o', `${bigTarget}.curl`, bigUrl]);
    const curlBigS = (Date.now() - tCurl) / 1000;
    for (const f of [bigFile, bigTarget, `${bigTarget}.curl`]) fs.rmSync(f, { force: true });
    await fetch(`${api}/file/delete?s3_bucket=files&s3_object_name=${bigObject}`, { method: 'DELETE', headers: auth });

    fig('baseline_curl_all_s', curlS);
    fig('ratio_all_completed_vs_curl', perRun[0] / curlS);
    fig('daemon_idle_rss_mb', daemonIdle);
    fig('daemon_peak_rss_mb', daemonPeak);
    fig('daemon_install_mib', rssFileMib);
    fig('daemon_install_s', daemonBigS);
    fig('daemon_install_ok', bigOk ? 'true' : 'false');
    fig('baseline_curl_peak_rss_mb', curlBig.peakMb);
    fig('baseline_curl_download_s', curlBigS);
    fig('ratio_daemon_vs_curl_rss', daemonPeak / Math.max(curlBig.peakMb, 1));
    fig('ratio_daemon_vs_curl_time', daemonBigS / curlBigS);
    if (!bigOk) throw new Error('benchmark run: the large install failed');
  } finally {
    s3.destroy();
    await db.conn.close();
    for (const c of children) c.proc.kill('SIGTERM');
    await Promise.all(children.map((c) => (c.proc.exitCode === null ? new Promise((r) => c.proc.once('exit', r)) : undefined)));
    await stackDown(cfg);
  }
}
