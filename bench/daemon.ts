// `npm run bench -- daemon [--file-mib 1024] [--port-offset 0]`
//
// The robot artifact (dist/ota-daemon.cjs under plain node with the daemon's flags, daemon/build.ts) on its own
// stack: its resident memory idle (VmRSS, connected, nothing to do) and at peak (VmHWM over its whole life, while it
// installs a 1 GiB file: download, sha256, write, fsync, rename), and the install time, from the daemon's own
// "job received" to "job completed" log lines. Baseline, same run, same object: the honest floor of that work with
// standard tools: `curl -o` to disk, then `sha256sum`, then `sync <file>` (an fsync of that file, as the daemon
// does; a bare `sync` would also flush every other process's dirty pages on a shared machine). Both sides are
// measured the same way: the object is read once first (so neither pays for a cold S3 server cache), and the floor
// runs just before and just after the daemon, its mean bracketing the daemon's run against drift in machine load.
// Also plain node's own RSS (`setInterval`), the floor under any Node daemon.
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { createS3Client } from '../activities/s3/client';
import { connectDb } from '../common/db';
import { findJob } from '../activities/db/ota-jobs';
import { buildDaemonBundle, DAEMON_NODE_FLAGS } from '../daemon/build';
import { stackDown, stackUp } from '../infra/stack';
import { benchEnv, currentRssMb, fig, flag, peakRssMb, randomFile, spawnProcess, startCloud, token, until, uploadWithCurl, waitOutput, type Child } from './common';

function run(command: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn(command, args, { stdio: ['ignore', 'ignore', 'inherit'] });
    p.on('error', reject);
    p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${command} exited ${code}`))));
  });
}

/** Time of the daemon's first JSON log line with this message and job id (pino `time`, ms). */
function logTime(out: string, msg: string, jobId: string): number | null {
  for (const line of out.split('\n')) {
    if (!line.startsWith('{') || !line.includes(jobId)) continue;
    const l = JSON.parse(line) as { msg?: string; time?: number; job_id?: string };
    if (l.msg === msg && l.job_id === jobId && typeof l.time === 'number') return l.time;
  }
  return null;
}

async function plainNodeRssMb(): Promise<number> {
  const p = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, 2000));
  const rss = currentRssMb(p.pid!);
  p.kill();
  return rss;
}

export async function main(args: string[]): Promise<void> {
  const fileMib = flag(args, '--file-mib', 1024);
  const offset = flag(args, '--port-offset', 0);
  const { env, cfg } = benchEnv(offset, { FLEET_ROBOTS: '1' });
  const say = (l: string) => process.stderr.write(`[bench] ${l}\n`);
  const fleet = await stackUp(cfg, { robots: 1, sshd: false, log: say });
  const children: Child[] = [];
  const db = await connectDb(cfg);
  const s3 = createS3Client(cfg);
  const work = path.join(cfg.dataDir, 'bench-daemon');
  fs.rmSync(work, { recursive: true, force: true });
  fs.mkdirSync(work, { recursive: true });
  try {
    await startCloud(env, children);
    const api = `${cfg.api.publicUrl}/api/v1`;
    const authorization = `Bearer ${await token(cfg)}`;
    const robot = fleet.robots[0];

    const source = path.join(work, 'source.bin');
    const sha = randomFile(source, fileMib);
    say(`uploading ${fileMib} MiB through the API`);
    const object = await uploadWithCurl(api, authorization, source);
    fs.rmSync(source);

    const bundle = await buildDaemonBundle();
    const daemon = spawnProcess(process.execPath, [...DAEMON_NODE_FLAGS, bundle, '--config', robot.daemonConfig], { PATH: process.env.PATH, HOME: process.env.HOME });
    children.push(daemon);
    await waitOutput(daemon, 'connected to the broker');
    // Idle means settled: the daemon returns its startup garbage two seconds after connecting (daemon/main.ts).
    await new Promise((r) => setTimeout(r, 10_000));
    const idle = currentRssMb(daemon.proc.pid!);
    const nodeBaseline = await plainNodeRssMb();

    const url = await getSignedUrl(s3, new GetObjectCommand({ Bucket: 'files', Key: object }), { expiresIn: 3600 });
    const floorFile = path.join(robot.root, 'bench', 'floor.bin');
    fs.mkdirSync(path.dirname(floorFile), { recursive: true });
    // The floor: the same object to disk with curl, hashed, that file synced.
    const floor = async (): Promise<number> => {
      const t0 = performance.now();
      await run('curl', ['-sS', '--fail', '-o', floorFile, url]);
      await run('sha256sum', [floorFile]);
      await run('sync', [floorFile]);
      const s = (performance.now() - t0) / 1000;
      fs.rmSync(floorFile);
      return s;
    };
    say('warm-up read of the object');
    await run('curl', ['-sS', '--fail', '-o', '/dev/null', url]);
    const floorBefore = await floor();

    const target = path.join(robot.root, 'bench', `big-${Date.now().toString(36)}.bin`);
    const q = new URLSearchParams({ robot_id: robot.id, s3_bucket: 'files', s3_object_name: object, deploy_path: target });
    const res = await fetch(`${api}/file/deploy_from_s3?${q}`, { method: 'POST', headers: { authorization } });
    const { job_id: jobId } = (await res.json()) as { job_id: string };
    if (res.status !== 200) throw new Error(`deploy: ${res.status}`);
    let status = '';
    await until('job terminal', async () => {
      status = (await findJob(db.models, jobId))?.status ?? '';
      return status === 'COMPLETED' || status === 'FAILED';
    }, 900000, 200);
    const peak = peakRssMb(daemon.proc.pid!);
    const received = logTime(daemon.out(), 'job received', jobId);
    const completed = logTime(daemon.out(), 'job completed', jobId);
    if (status !== 'COMPLETED' || received === null || completed === null) throw new Error(`install ${status}:\n${daemon.out()}`);
    const installS = (completed - received) / 1000;
    const ok = crypto.createHash('sha256').update(fs.readFileSync(target)).digest('hex') === sha;
    fs.rmSync(target);

    const floorAfter = await floor();
    const floorS = (floorBefore + floorAfter) / 2;
    await fetch(`${api}/file/delete?s3_bucket=files&s3_object_name=${object}`, { method: 'DELETE', headers: { authorization } });

    fig('file_mib', fileMib);
    fig('node_baseline_rss_mb', nodeBaseline);
    fig('daemon_idle_rss_mb', idle);
    fig('daemon_peak_rss_mb', peak);
    fig('daemon_install_s', installS);
    fig('daemon_install_ok', ok ? 'true' : 'false');
    fig('floor_before_s', floorBefore);
    fig('floor_after_s', floorAfter);
    fig('floor_s', floorS);
    fig('daemon_install_vs_floor', installS / floorS);
    fig('daemon_bundle_kb', fs.statSync(bundle).size / 1024);
    if (!ok) throw new Error('installed bytes do not match');
  } finally {
    s3.destroy();
    await db.close();
    for (const c of children) c.proc.kill('SIGTERM');
    await Promise.all(children.map((c) => (c.proc.exitCode === null ? new Promise((r) => c.proc.once('exit', r)) : undefined)));
    fs.rmSync(work, { recursive: true, force: true });
    await stackDown(cfg);
  }
}
