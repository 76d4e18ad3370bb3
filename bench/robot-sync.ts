// `npm run bench -- robot-sync [--large-mib 512] [--files 5000] [--file-kib 8] [--rounds 3] [--port-offset 0]`
//
// Robot sync against one simulated robot (a real OpenSSH sshd), each figure next to its baseline from the same
// run, against the same robot:
// 1. One large RF (512 MiB) sent by the upload engine the robot-sync activity runs (.part, many writes in
//    flight, fsync, rename) vs OpenSSH `sftp` put of the same file: throughput ratio `large_vs_sftp` (best of
//    `--rounds` alternating runs each; sftp does not fsync, the engine does).
// 2. Initial sync of 5,000 RFs of 8 KiB, end to end through the offline app: POST /api/robots/sync → robotSync
//    workflow → child workflow → inventory, upload, record → result; vs `rsync -a` over ssh of the same tree
//    (into another directory of the same robot): time ratio `initial_vs_rsync`.
// 3. The same sync again (nothing to do) vs rsync's no-op: `noop_vs_rsync`.
// It runs on its own stack (own ports, data under .data/bench-robot-sync) so it never disturbs `npm start` or tests.
import { execFile, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { Connection, WorkflowClient } from '@temporalio/client';
import { connectRobot, sftp } from '../activities/ssh/connect';
import { ensureRemoteDirs, uploadFiles } from '../activities/ssh/sftp-upload';
import { loadConfig, repoRoot } from '../common/config';
import { chunks, connectOfflineDb } from '../common/db';
import { markPerfectStateChanged } from '../common/models/offline';
import { robotDirectoryFromFleet } from '../common/robot-directory';
import { stackDown, stackUp } from '../infra/stack';
import { flag, spawnTs, waitOutput, type Child } from './common';
import type { RobotSyncResult } from '../workflows/offline/robot-sync';

const run = promisify(execFile);

// Away from ota-fleet's ranges, so both benchmarks (and their --port-offset variants) can run side by side.
const BENCH_PORTS: Record<string, number> = {
  TEMPORAL_PORT: 45233,
  TEMPORAL_UI_PORT: 46233,
  MONGO_PORT: 45017,
  S3_PORT: 45070,
  MQTT_PORT: 43883,
  MQTT_CLOUD_PORT: 43884,
  FLEET_SSH_BASE_PORT: 44201,
  API_PORT: 46005,
  OFFLINE_API_PORT: 46080,
};

/** Writes `bytes` random bytes to `file`; returns the sha256. */
function randomFile(file: string, bytes: number): string {
  const h = crypto.createHash('sha256');
  const fd = fs.openSync(file, 'w');
  for (let left = bytes; left > 0; ) {
    const chunk = crypto.randomBytes(Math.min(left, 1 << 20));
    h.update(chunk);
    fs.writeSync(fd, chunk);
    left -= chunk.length;
  }
  fs.closeSync(fd);
  return h.digest('hex');
}

const seconds = async (fn: () => Promise<unknown>) => {
  const t0 = performance.now();
  await fn();
  return (performance.now() - t0) / 1000;
};

export async function main(args: string[]): Promise<void> {
  const largeMib = flag(args, '--large-mib', 512);
  const files = flag(args, '--files', 5000);
  const fileKib = flag(args, '--file-kib', 8);
  const offset = flag(args, '--port-offset', 0);
  const rounds = flag(args, '--rounds', 3);
  const ports = Object.fromEntries(Object.entries(BENCH_PORTS).map(([k, v]) => [k, String(v + offset)]));
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    ...ports,
    FLEET_DATA_DIR: path.join(repoRoot, '.data', `bench-robot-sync${offset ? `-${offset}` : ''}`),
    API_PUBLIC_URL: `http://127.0.0.1:${ports.API_PORT}`,
    FLEET_ROBOTS: '1',
    LOG_LEVEL: 'warn',
  };
  const cfg = loadConfig(env);
  const say = (l: string) => process.stderr.write(`[bench] ${l}\n`);
  const fleet = await stackUp(cfg, { robots: 1, log: say }).catch(async (e: unknown) => {
    await stackDown(cfg); // what did start is stopped again
    throw e;
  });
  const robot = fleet.robots[0];
  const target = robotDirectoryFromFleet(fleet).ssh(robot.id);
  const children: Child[] = [];
  const db = await connectOfflineDb(cfg);
  const connection = await Connection.connect({ address: cfg.offline.temporal.address });
  const temporal = new WorkflowClient({ connection, namespace: cfg.offline.temporal.namespace });
  const sshOpts = ['-i', fleet.clientKeyFile, '-p', String(robot.ssh.port), '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR'];
  const login = `${robot.ssh.username}@${robot.ssh.host}`;
  const cache = cfg.offline.rfCacheDir;
  const rfRoot = path.join(robot.root, 'rf');
  const runTag = Date.now().toString(36);
  try {
    for (const [entry, ready] of [
      ['workers/offline-worker.ts', 'offline worker started'],
      ['api/offline/main.ts', 'offline API listening'],
    ] as const) {
      const c = spawnTs(entry, [], { ...env, LOG_LEVEL: 'info' });
      children.push(c);
      await waitOutput(c, ready);
    }
    fs.mkdirSync(cache, { recursive: true });
    fs.rmSync(robot.root, { recursive: true, force: true });
    fs.mkdirSync(rfRoot, { recursive: true });

    // --- 1. one large RF: the engine vs sftp put -----------------------------------------------------
    const big = path.join(cfg.dataDir, 'big.bin');
    say(`writing a ${largeMib} MiB RF`);
    const bigSha = randomFile(big, largeMib * 1024 * 1024);
    const bigCached = path.join(cache, bigSha);
    fs.renameSync(big, bigCached);
    // OpenSSH's sftp takes the port as -P.
    const sftpOpts = sshOpts.map((o) => (o === '-p' ? '-P' : o));
    const sftpPut = () =>
      new Promise<void>((resolve, reject) => {
        const p = spawn('sftp', ['-q', ...sftpOpts, '-b', '-', login], { stdio: ['pipe', 'ignore', 'inherit'] });
        p.stdin.end(`put ${bigCached} ${path.join(robot.root, 'sftp-big.bin')}\n`);
        p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`sftp exited ${code}`))));
      });
    const client = await connectRobot(target);
    let largeSent = 0;
    const engine = async () => {
      const item = { localPath: bigCached, remotePath: path.join(rfRoot, 'large', 'big.rf'), size: largeMib * 1024 * 1024, sha256: bigSha };
      await ensureRemoteDirs(client, [item.remotePath]);
      const [s, flushSession] = [await sftp(client), await sftp(client)];
      const r = await uploadFiles(s, [item], { flushSession });
      largeSent = r.bytesSent;
      s.end();
      flushSession.end();
    };
    // Alternating runs, best of each; every run starts with nothing left to write back from the one before.
    let sftpS = Infinity;
    let engineS = Infinity;
    for (let i = 0; i < rounds; i++) {
      await run('sync');
      sftpS = Math.min(sftpS, await seconds(sftpPut));
      await run('sync');
      engineS = Math.min(engineS, await seconds(engine));
    }
    client.end();
    const largeOk = crypto.createHash('sha256').update(fs.readFileSync(path.join(rfRoot, 'large', 'big.rf'))).digest('hex') === bigSha;
    for (const f of [path.join(robot.root, 'sftp-big.bin'), path.join(rfRoot, 'large', 'big.rf'), bigCached]) fs.rmSync(f, { force: true });

    // --- 2./3. many small RFs through the workflow vs rsync ------------------------------------------
    say(`writing ${files} RFs of ${fileKib} KiB`);
    const tree = path.join(cfg.dataDir, 'rsync-src');
    fs.rmSync(tree, { recursive: true, force: true });
    const entries: Array<{ rel: string; sha: string }> = [];
    for (let i = 0; i < files; i++) {
      const bytes = crypto.randomBytes(fileKib * 1024);
      const sha = crypto.createHash('sha256').update(bytes).digest('hex');
      const rel = path.join(`d${i % 50}`, `rf${i}.bin`);
      fs.writeFileSync(path.join(cache, sha), bytes);
      fs.mkdirSync(path.join(tree, `d${i % 50}`), { recursive: true });
      fs.linkSync(path.join(cache, sha), path.join(tree, rel)); // the same bytes, laid out as on the robot
      entries.push({ rel, sha });
    }
    await db.models.Robot.deleteMany({});
    await db.models.PerfectStateEntry.deleteMany({});
    await db.models.InventoryEntry.deleteMany({});
    await db.models.Robot.create({
      _id: robot.id,
      host: robot.ssh.host,
      port: robot.ssh.port,
      username: robot.ssh.username,
      credential_ref: `key:${fleet.clientKeyFile}`,
      host_key_sha256: robot.ssh.hostKeySha256,
      connected: true,
      rf_root: rfRoot,
    });
    const now = new Date();
    for (const part of chunks(entries)) {
      await db.models.PerfectStateEntry.insertMany(
        part.map((e) => {
          const p = path.join(rfRoot, 'sync', e.rel);
          return { _id: `${robot.id}|${p}`, robot_id: robot.id, path: p, sha256: e.sha, size: fileKib * 1024, url: `https://example.invalid/rf/${e.sha}`, updated_at: now };
        }),
      );
    }
    // As cloud sync does after writing a perfect state (common/models/offline.ts).
    await markPerfectStateChanged(db.models, [robot.id]);

    const rsyncTo = `${login}:${path.join(robot.root, `rsync-${runTag}`)}/`;
    const rsync = () => run('rsync', ['-a', '-e', `ssh ${sshOpts.join(' ')}`, `${tree}/`, rsyncTo], { maxBuffer: 1 << 20 });
    const api = `http://127.0.0.1:${cfg.offline.api.port}/api`;
    const sync = async (): Promise<RobotSyncResult> => {
      const res = await fetch(`${api}/robots/sync`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
      if (res.status !== 202) throw new Error(`POST /robots/sync: ${res.status} ${await res.text()}`);
      const { workflow_id } = (await res.json()) as { workflow_id: string };
      return (await temporal.getHandle(workflow_id).result()) as RobotSyncResult;
    };

    say('initial sync: rsync, then the workflow');
    await run('sync');
    const rsyncInitialS = await seconds(rsync);
    await run('sync');
    let initial: RobotSyncResult | undefined;
    const initialS = await seconds(async () => (initial = await sync()));
    say('no-op sync: rsync, then the workflow');
    await run('sync');
    const rsyncNoopS = await seconds(rsync);
    let noop: RobotSyncResult | undefined;
    const noopS = await seconds(async () => (noop = await sync()));
    // Context for the no-op figure: one read of the robot's perfect state with the raw driver (FerretDB scans).
    const dbReadS = await seconds(() => db.connection.db!.collection('perfect_state_entries').find({ robot_id: robot.id }).toArray());
    const initialUploaded = initial!.totals.uploaded.files;
    const noopSent = noop!.totals.sentBytes;

    const fig = (k: string, v: number | string) => console.log(`${k}=${typeof v === 'number' ? Number(v.toFixed(3)) : v}`);
    const mib = largeMib;
    fig('large_mib', mib);
    fig('large_s', engineS);
    fig('large_mib_per_s', mib / engineS);
    fig('large_sent_bytes', largeSent);
    fig('large_sha256_ok', largeOk ? 'true' : 'false');
    fig('baseline_sftp_put_s', sftpS);
    fig('baseline_sftp_mib_per_s', mib / sftpS);
    fig('large_vs_sftp', mib / engineS / (mib / sftpS));
    fig('files', files);
    fig('file_kib', fileKib);
    fig('initial_s', initialS);
    fig('initial_uploaded_files', initialUploaded);
    fig('initial_robot_ms', JSON.stringify(initial!.robots[0]?.ms ?? null));
    fig('baseline_rsync_initial_s', rsyncInitialS);
    fig('initial_vs_rsync', initialS / rsyncInitialS);
    fig('noop_s', noopS);
    fig('noop_sent_bytes', noopSent);
    fig('noop_unchanged', String(noop!.robots[0]?.unchanged ?? false));
    fig('noop_robot_ms', JSON.stringify(noop!.robots[0]?.ms ?? null));
    fig('baseline_rsync_noop_s', rsyncNoopS);
    fig('noop_vs_rsync', noopS / rsyncNoopS);
    fig('context_raw_driver_read_perfect_state_s', dbReadS);
    if (!largeOk || initialUploaded !== files || noopSent !== 0 || noop!.totals.uploaded.files !== 0) {
      throw new Error(`benchmark run did not sync correctly: ${JSON.stringify({ initial: initial!.robots, noop: noop!.robots })}`);
    }
  } finally {
    for (const c of children) c.proc.kill('SIGTERM');
    await Promise.all(children.map((c) => (c.proc.exitCode === null ? new Promise((r) => c.proc.once('exit', r)) : undefined)));
    await Promise.allSettled([db.close(), connection.close()]);
    await stackDown(cfg);
  }
}
