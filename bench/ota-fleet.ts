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
import { stackDown } from '../infra/stack';
import { runningPid, stackPaths } from '../infra/proc';
import { Client, Connection } from '@temporalio/client';
import { otaWorkflowId } from '../workflows/ota-contract';
import { buildDaemonBundle, DAEMON_NODE_FLAGS } from '../daemon/build';
import {
  cpuSeconds,
  currentRssMb,
  curl,
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
import { startBenchSystem } from './harness';

export async function main(args: string[]): Promise<void> {
  const robots = flag(args, '--robots', 200);
  const fileMib = flag(args, '--file-mib', 1);
  const rssFileMib = flag(args, '--rss-file-mib', 1024);
  const concurrency = flag(args, '--concurrency', 16);
  // --port-offset moves every port of the benchmark's stack (two benchmarks side by side, or a busy port).
  const { env, cfg, say, children, db } = await startBenchSystem(args, robots);
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

    say(`deploying ${fileMib} MiB to ${robots} robots (${concurrency} requests in flight)`);
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
    const t0 = Date.now();
    await runPool(robots, concurrency, async (i) => {
      const q = new URLSearchParams({ robot_id: db.fleet[i].id, s3_bucket: 'files', s3_object_name: object, deploy_path: targets[i] });
      const res = await fetch(`${api}/file/deploy_from_s3?${q}`, { method: 'POST', headers: auth });
      const body = (await res.json()) as { job_id: string };
      if (res.status !== 200) throw new Error(`deploy: ${res.status} ${JSON.stringify(body)}`);
      jobIds.push(body.job_id);
    });
    const requestsDoneS = (Date.now() - t0) / 1000;
    type Row = { _id: string; status: string; timestamp: Date; finished_at: Date | null };
    let rows: Row[] = [];
    // Polled once a second, finished jobs not asked again: every filter is a collection scan on FerretDB, and the
    // bench must not be what loads the database (finished_at comes from the job, so the figure does not depend on it).
    const done = new Map<string, Row>();
    await until('all jobs terminal', async () => {
      const open = jobIds.filter((id) => !done.has(id));
      for (const r of await db.conn.models.OtaJob.find({ _id: { $in: open }, finished_at: { $ne: null } }, { status: 1, timestamp: 1, finished_at: 1 }).lean<Row[]>()) done.set(r._id, r);
      return done.size === robots;
    }, 600000, 1000);
    rows = [...done.values()];
    const cpu1 = cpuAt();
    const burstS = (Date.now() - t0) / 1000;
    const completed = rows.filter((r) => r.status === 'COMPLETED');
    // Temporal's cost per job: history events of a sample of the jobs' workflows.
    const connection = await Connection.connect({ address: cfg.temporal.address });
    const sample = jobIds.slice(0, 10);
    const historyEvents = await Promise.all(
      sample.map(async (id) => (await new Client({ connection, namespace: cfg.temporal.namespace }).workflow.getHandle(otaWorkflowId(id)).describe()).historyLength),
    );
    await connection.close();
    const lastDone = Math.max(...rows.map((r) => r.finished_at!.getTime()));
    const allCompletedS = (lastDone - t0) / 1000;
    const latencies = rows.map((r) => r.finished_at!.getTime() - r.timestamp.getTime()).sort((a, b) => a - b);
    const verified = targets.filter((t) => fs.existsSync(t) && crypto.createHash('sha256').update(fs.readFileSync(t)).digest('hex') === sha).length;

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
      const job = await db.conn.models.OtaJob.findById(dep.job_id).lean<{ status: string; finished_at: Date | null }>();
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

    fig('robots', robots);
    fig('file_mib', fileMib);
    fig('completed', completed.length);
    fig('verified_sha256', verified);
    fig('deploy_requests_s', requestsDoneS);
    fig('all_completed_s', allCompletedS);
    fig('p50_ms', percentile(latencies, 50));
    fig('p95_ms', percentile(latencies, 95));
    fig('jobs_per_s', robots / allCompletedS);
    fig('temporal_history_events_per_job', historyEvents.reduce((a, b) => a + b, 0) / Math.max(1, historyEvents.length));
    for (const n of Object.keys(profiled)) fig(`cpu_pct_${n}`, ((cpu1[n] - cpu0[n]) * 100) / burstS);
    fig('baseline_curl_all_s', curlS);
    fig('ratio_all_completed_vs_curl', allCompletedS / curlS);
    fig('daemon_idle_rss_mb', daemonIdle);
    fig('daemon_peak_rss_mb', daemonPeak);
    fig('daemon_install_mib', rssFileMib);
    fig('daemon_install_s', daemonBigS);
    fig('daemon_install_ok', bigOk ? 'true' : 'false');
    fig('baseline_curl_peak_rss_mb', curlBig.peakMb);
    fig('baseline_curl_download_s', curlBigS);
    fig('ratio_daemon_vs_curl_rss', daemonPeak / Math.max(curlBig.peakMb, 1));
    fig('ratio_daemon_vs_curl_time', daemonBigS / curlBigS);
    if (completed.length !== robots || verified !== robots || !bigOk) throw new Error('benchmark run had failed jobs');
  } finally {
    s3.destroy();
    await db.conn.close();
    for (const c of children) c.proc.kill('SIGTERM');
    await Promise.all(children.map((c) => (c.proc.exitCode === null ? new Promise((r) => c.proc.once('exit', r)) : undefined)));
    await stackDown(cfg);
  }
}
