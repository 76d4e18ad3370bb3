// `npm run bench -- robot-sync [--large-mib 512] [--files 5000] [--file-kib 8] [--rounds 5] [--port-offset 0]`
//
// Robot sync against one simulated robot (a real OpenSSH sshd), each figure next to its baseline from the same
// run, against the same robot. Every comparison has a warm-up run of each side first (not counted), then
// `--rounds` alternating rounds (the order flipped every round, `sync` before every timed run); each side's
// per-round times are printed, and the ratios are of the medians (`*_best`: of the best rounds).
// 1. One large RF (512 MiB) sent by the upload engine the robot-sync activity runs (own connection, .part, many
//    writes in flight, fsync, rename) vs OpenSSH `sftp` put of the same file: throughput ratio `large_vs_sftp`
//    (sftp does not fsync, the engine does). CPU seconds of each side (client; robot's sshd sessions) too.
// 2. Initial sync of 5,000 RFs of 8 KiB, end to end through the offline app: POST /api/robots/sync → robotSync
//    workflow → child workflow → inventory, upload, record → result; vs `rsync -a` over ssh of the same tree
//    (into an empty directory of the same robot): time ratio `initial_vs_rsync`. Every round of either side
//    starts from the same prepared state: both trees removed from the robot, its inventory and sync state reset,
//    `sync`; the sides alternate in ABBA order.
// 3. The same sync again (nothing to do) vs rsync's no-op, in the same rounds: `noop_vs_rsync`.
// It runs on its own stack (own ports, data under .data/bench-robot-sync) so it never disturbs `npm start` or tests.
import { execFile, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { Connection, WorkflowClient } from '@temporalio/client';
import { connectRobot, sftp, verifiedHostKey } from '../activities/ssh/connect';
import { opensshUnavailable, uploadLargeWithOpenssh } from '../activities/ssh/openssh-put';
import { ensureRemoteDirs, uploadFiles } from '../activities/ssh/sftp-upload';
import { loadConfig, repoRoot } from '../common/config';
import { chunks, connectOfflineDb } from '../common/db';
import { markPerfectStateChanged } from '../common/models/offline';
import { robotDirectoryFromFleet } from '../common/robot-directory';
import { stackDown, stackUp } from '../infra/stack';
import { eventMs as ms, fig, flag, spawnTs, until, waitOutput, type Child } from './common';
import type { RobotSyncResult } from '../workflows/offline/robot-sync';

const run = promisify(execFile);

// Away from ota-fleet's ranges, so both benchmarks (and their --port-offset variants) can run side by side.
const BENCH_PORTS: Record<string, number> = {
  TEMPORAL_PORT: 20233,
  TEMPORAL_UI_PORT: 21233,
  MONGO_PORT: 20017,
  S3_PORT: 20070,
  MQTT_PORT: 18883,
  MQTT_CLOUD_PORT: 18884,
  FLEET_SSH_BASE_PORT: 19201,
  API_PORT: 21005,
  OFFLINE_API_PORT: 21080,
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

interface Run {
  s: number;
  robotCpu: number;
  clientCpu: number;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** CPU (user + system, seconds) of a process's children that have ended and been reaped (cutime + cstime). */
function reapedCpuSeconds(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[13]) + Number(f[14])) / 100;
}

/** CPU (user + system, seconds) a live process has used so far (its own threads; utime + stime). */
function liveCpuSeconds(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

const ownCpuSeconds = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

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
  const rounds = flag(args, '--rounds', 5);
  // `--only large` / `--only small`: one half of the benchmark (the other's figures are not printed).
  const only = args.includes('--only') ? args[args.indexOf('--only') + 1] : 'all';
  if (!['all', 'large', 'small'].includes(only)) throw new Error('--only: large or small');
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

    const largeFigures = only === 'small' ? null : await (async () => {
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
      let largeSent = 0;
      // Its own connection per run, as the robot-sync activity has (and so the robot's session ends with the run).
      // Two transports: the ssh2 engine, and OpenSSH's ssh client into dd on the robot (ROBOT_SYNC_OPENSSH, openssh-put.ts).
      const engine = (transport: 'ssh2' | 'openssh') => async () => {
        const client = await connectRobot(target);
        const item = { localPath: bigCached, remotePath: path.join(rfRoot, 'large', 'big.rf'), size: largeMib * 1024 * 1024, sha256: bigSha };
        await ensureRemoteDirs(client, [item.remotePath]);
        const s = await sftp(client);
        if (transport === 'openssh') {
          largeSent = (await uploadLargeWithOpenssh(s, item, { target, hostKey: verifiedHostKey(client)!, streams: cfg.offline.robotSyncOpenssh.streams })).bytesSent;
        } else {
          const flushSession = await sftp(client);
          largeSent = (await uploadFiles(s, [item], { flushSession })).bytesSent;
          flushSession.end();
        }
        s.end();
        client.end();
      };
      // Per run: wall time, and CPU on each side — the robot's sshd sessions (reaped by its master once they
      // end) and the client: this process for the ssh2 engine, the reaped `sftp` child (with its ssh) for the
      // baseline, both for the OpenSSH transport. CPU per byte is what decides on 2 shared cores, and it varies far
      // less than wall time on a busy machine.
      const sshdPid = Number(fs.readFileSync(path.join(robot.dir, 'sshd.pid'), 'utf8'));
      const clientCpu = (own: boolean, reaped: boolean) => (own ? ownCpuSeconds() : 0) + (reaped ? reapedCpuSeconds(process.pid) : 0);
      const measured = async (fn: () => Promise<unknown>, own: boolean, reaped: boolean): Promise<Run> => {
        await run('sync'); // nothing left to write back from the run before
        const robot0 = reapedCpuSeconds(sshdPid);
        const self0 = clientCpu(own, reaped);
        const s = await seconds(fn);
        await until('robot sessions reaped', () => reapedCpuSeconds(sshdPid) > robot0, 2000, 20).catch(() => undefined);
        return { s, robotCpu: reapedCpuSeconds(sshdPid) - robot0, clientCpu: clientCpu(own, reaped) - self0 };
      };
      const opensshWhy = opensshUnavailable();
      if (opensshWhy) say(`OpenSSH transport not measured: ${opensshWhy}`);
      const sides: Array<{ name: 'sftp' | 'ssh2' | 'openssh'; fn: () => Promise<unknown>; own: boolean; reaped: boolean }> = [
        { name: 'sftp', fn: sftpPut, own: false, reaped: true },
        { name: 'ssh2', fn: engine('ssh2'), own: true, reaped: false },
        ...(opensshWhy ? [] : [{ name: 'openssh' as const, fn: engine('openssh'), own: true, reaped: true }]),
      ];
      // A warm-up run of each (page cache, JIT, sshd), then rounds, the order rotated every round.
      say('large RF: warm-up, then rounds in rotated order');
      const runsOf: Record<string, Run[]> = { sftp: [], ssh2: [], openssh: [] };
      for (const side of sides) await measured(side.fn, side.own, side.reaped);
      for (let i = 0; i < rounds; i++) {
        for (let k = 0; k < sides.length; k++) {
          const side = sides[(i + k) % sides.length];
          runsOf[side.name].push(await measured(side.fn, side.own, side.reaped));
        }
      }
      // The transport robot sync uses for this size (ROBOT_SYNC_OPENSSH) is the one `large_*` reports.
      const opensshOn = !opensshWhy && cfg.offline.robotSyncOpenssh.enabled && largeMib * 1024 * 1024 >= cfg.offline.robotSyncOpenssh.fromBytes;
      const engineRuns = runsOf[opensshOn ? 'openssh' : 'ssh2'];
      const sftpRuns = runsOf.sftp;
      const largeOk = crypto.createHash('sha256').update(fs.readFileSync(path.join(rfRoot, 'large', 'big.rf'))).digest('hex') === bigSha;
      for (const f of [path.join(robot.root, 'sftp-big.bin'), path.join(rfRoot, 'large', 'big.rf'), bigCached]) fs.rmSync(f, { force: true });

      return { engineRuns, sftpRuns, runsOf, largeSent, largeOk, opensshOn };
    })();
    const smallFigures = only === 'large' ? null : await (async () => {
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

      const rsyncRun = (dir: string) => () =>
        run('rsync', ['-a', '-e', `ssh ${sshOpts.join(' ')}`, `${tree}/`, `${login}:${path.join(robot.root, dir)}/`], { maxBuffer: 1 << 20 });
      const api = `http://127.0.0.1:${cfg.offline.api.port}/api`;
      let lastRun = { workflowId: '', postedAt: 0, resultAt: 0 };
      const sync = async (): Promise<RobotSyncResult> => {
        const postedAt = Date.now();
        const res = await fetch(`${api}/robots/sync`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
        if (res.status !== 202) throw new Error(`POST /robots/sync: ${res.status} ${await res.text()}`);
        const { workflow_id } = (await res.json()) as { workflow_id: string };
        const result = (await temporal.getHandle(workflow_id).result()) as RobotSyncResult;
        lastRun = { workflowId: workflow_id, postedAt, resultAt: Date.now() };
        return result;
      };
      /**
       * Where a run's time went outside the robot's own steps, from the histories (the server's clock, the same
       * machine's): ms from the POST to the parent's start, the child's start, the activity's schedule, start and
       * completion, the child's and the parent's end, and the result in the client's hands.
       */
      const timeline = async (run: typeof lastRun): Promise<Record<string, number>> => {
        const parent = (await temporal.getHandle(run.workflowId).fetchHistory()).events ?? [];
        const child = (await temporal.getHandle(`${run.workflowId}/${robot.id}`).fetchHistory()).events ?? [];
        const at = (events: typeof parent, pick: (e: (typeof parent)[number]) => unknown) => {
          const e = events.find((x) => pick(x));
          return e ? ms(e.eventTime) - run.postedAt : -1;
        };
        return {
          parent_started: at(parent, (e) => e.workflowExecutionStartedEventAttributes),
          child_started: at(child, (e) => e.workflowExecutionStartedEventAttributes),
          activity_scheduled: at(child, (e) => e.activityTaskScheduledEventAttributes),
          activity_started: at(child, (e) => e.activityTaskStartedEventAttributes),
          activity_completed: at(child, (e) => e.activityTaskCompletedEventAttributes),
          child_completed: at(child, (e) => e.workflowExecutionCompletedEventAttributes),
          parent_completed: at(parent, (e) => e.workflowExecutionCompletedEventAttributes),
          parent_signals: parent.filter((e) => e.workflowExecutionSignaledEventAttributes).length,
          result_received: run.resultAt - run.postedAt,
        };
      };
      let initialTimeline: Record<string, number> = {};
      /** The robot as before its first sync: no synced tree, no inventory, no sync state (the perfect state stays). */
      const resetRobot = async () => {
        fs.rmSync(path.join(rfRoot, 'sync'), { recursive: true, force: true });
        await db.models.InventoryEntry.deleteMany({ robot_id: robot.id });
        await db.models.Robot.updateOne({ _id: robot.id }, { $set: { robot_sync_state: null } });
      };
      const timed = async (fn: () => Promise<unknown>) => {
        await run('sync'); // nothing left to write back from before (the no-op's start too)
        return seconds(fn);
      };
      // CPU of each end during an initial sync: the robot's sshd sessions (reaped once they end), and the center's
      // side: the offline worker (the SFTP engine runs in it) for ours, the reaped rsync and ssh for rsync's.
      const smallSshdPid = Number(fs.readFileSync(path.join(robot.dir, 'sshd.pid'), 'utf8'));
      const workerPid = children[0].proc.pid!;
      const cpuOf: Record<'ours' | 'rsync', { client: number[]; robot: number[] }> = { ours: { client: [], robot: [] }, rsync: { client: [], robot: [] } };
      const timedCpu = async (side: 'ours' | 'rsync', keep: boolean, fn: () => Promise<unknown>) => {
        await run('sync');
        const client = () => (side === 'ours' ? liveCpuSeconds(workerPid) : reapedCpuSeconds(process.pid));
        const robot0 = reapedCpuSeconds(smallSshdPid);
        const client0 = client();
        const s = await seconds(fn);
        await until('robot sessions reaped', () => reapedCpuSeconds(smallSshdPid) > robot0, 2000, 20).catch(() => undefined);
        if (keep) cpuOf[side].client.push(client() - client0), cpuOf[side].robot.push(reapedCpuSeconds(smallSshdPid) - robot0);
        return s;
      };

      // A warm-up round of each side, then rounds in ABBA order (rsync first in even rounds, last in odd ones):
      // initial sync, then the no-op sync of the same tree. Every round of either side starts from the same state,
      // prepared the same way: neither side's tree on the robot (rsync's target directory and the synced tree both
      // removed), the robot's inventory and sync state reset, everything written back to disk (`sync`).
      const rsyncInitial: number[] = [];
      const rsyncNoop: number[] = [];
      const ours: Array<{ initial: number; noop: number; initialResult: RobotSyncResult; noopResult: RobotSyncResult }> = [];
      const rsyncDir = `rsync-${runTag}`;
      const prepare = async () => {
        fs.rmSync(path.join(robot.root, rsyncDir), { recursive: true, force: true });
        await resetRobot();
        await run('sync');
      };
      const rsyncRound = async (keep: boolean) => {
        await prepare();
        const r = rsyncRun(rsyncDir);
        const initialS = await timedCpu('rsync', keep, r);
        const noopS = await timed(r);
        if (keep) rsyncInitial.push(initialS), rsyncNoop.push(noopS);
      };
      const ourRound = async (keep: boolean) => {
        await prepare();
        let initialResult: RobotSyncResult | undefined;
        let noopResult: RobotSyncResult | undefined;
        const initialS = await timedCpu('ours', keep, async () => (initialResult = await sync()));
        if (keep) initialTimeline = await timeline(lastRun);
        const noopS = await timed(async () => (noopResult = await sync()));
        if (keep) ours.push({ initial: initialS, noop: noopS, initialResult: initialResult!, noopResult: noopResult! });
      };
      say('small RFs: warm-up, then rounds of initial + no-op sync in ABBA order, each from the same prepared state');
      await rsyncRound(false);
      await ourRound(false);
      for (let i = 0; i < rounds; i++) {
        if (i % 2 === 0) await rsyncRound(true);
        await ourRound(true);
        if (i % 2 === 1) await rsyncRound(true);
      }
      await prepare();
      // Context for the no-op figure: one read of the robot's perfect state with the raw driver (FerretDB scans).
      const dbReadS = await seconds(() => db.connection.db!.collection('perfect_state_entries').find({ robot_id: robot.id }).toArray());

      return { ours, rsyncInitial, rsyncNoop, dbReadS, cpuOf, initialTimeline };
    })();
    const list = (xs: number[]) => `[${xs.map((x) => x.toFixed(3)).join(',')}]`;
    fig('rounds', rounds);
    if (largeFigures) {
      const { engineRuns, sftpRuns, runsOf, largeSent, largeOk } = largeFigures;
      const mib = largeMib;
      const engineS = median(engineRuns.map((r) => r.s));
      const sftpS = median(sftpRuns.map((r) => r.s));
      fig('large_mib', mib);
      fig('large_rounds_s', list(engineRuns.map((r) => r.s)));
      fig('large_s', engineS);
      fig('large_mib_per_s', mib / engineS);
      fig('large_client_cpu_s', median(engineRuns.map((r) => r.clientCpu)));
      fig('large_robot_cpu_s', median(engineRuns.map((r) => r.robotCpu)));
      fig('large_sent_bytes', largeSent);
      fig('large_sha256_ok', largeOk ? 'true' : 'false');
      fig('baseline_sftp_rounds_s', list(sftpRuns.map((r) => r.s)));
      fig('baseline_sftp_put_s', sftpS);
      fig('baseline_sftp_mib_per_s', mib / sftpS);
      fig('baseline_sftp_client_cpu_s', median(sftpRuns.map((r) => r.clientCpu)));
      fig('baseline_sftp_robot_cpu_s', median(sftpRuns.map((r) => r.robotCpu)));
      fig('large_vs_sftp', sftpS / engineS);
      fig('large_vs_sftp_best', Math.min(...sftpRuns.map((r) => r.s)) / Math.min(...engineRuns.map((r) => r.s)));
      fig('large_transport', largeFigures.opensshOn ? 'openssh' : 'ssh2');
      fig('large_openssh_streams', cfg.offline.robotSyncOpenssh.streams);
      // Both transports side by side: time, CPU on each end, and total CPU per GiB (what decides on 2 cores).
      for (const name of ['ssh2', 'openssh'] as const) {
        const rs = runsOf[name];
        if (rs.length === 0) continue;
        const cpu = (r: Run) => r.clientCpu + r.robotCpu;
        fig(`large_${name}_rounds_s`, list(rs.map((r) => r.s)));
        fig(`large_${name}_client_cpu_rounds_s`, list(rs.map((r) => r.clientCpu)));
        fig(`large_${name}_robot_cpu_rounds_s`, list(rs.map((r) => r.robotCpu)));
        fig(`large_${name}_total_cpu_s_per_gib`, (median(rs.map(cpu)) * 1024) / mib);
        fig(`large_${name}_vs_sftp`, sftpS / median(rs.map((r) => r.s)));
    }
    fig('baseline_sftp_client_cpu_rounds_s', list(sftpRuns.map((r) => r.clientCpu)));
    fig('baseline_sftp_robot_cpu_rounds_s', list(sftpRuns.map((r) => r.robotCpu)));
    fig('baseline_sftp_total_cpu_s_per_gib', (median(sftpRuns.map((r) => r.clientCpu + r.robotCpu)) * 1024) / mib);
      if (!largeOk) throw new Error('benchmark run did not sync the large RF correctly');
    }
    if (smallFigures) {
      const { ours, rsyncInitial, rsyncNoop, dbReadS, cpuOf, initialTimeline } = smallFigures;
      const last = ours[ours.length - 1];
      fig('files', files);
      fig('file_kib', fileKib);
      // The same figures for both phases: our rounds against rsync's, and the robot's own breakdown of the last run.
      const phase = (name: 'initial' | 'noop', oursS: number[], rsyncS: number[], robotMs: unknown) => {
        fig(`${name}_rounds_s`, list(oursS));
        fig(`${name}_s`, median(oursS));
        fig(`${name}_robot_ms`, JSON.stringify(robotMs ?? null));
        fig(`baseline_rsync_${name}_rounds_s`, list(rsyncS));
        fig(`baseline_rsync_${name}_s`, median(rsyncS));
        fig(`${name}_vs_rsync`, median(oursS) / median(rsyncS));
      };
      phase('initial', ours.map((r) => r.initial), rsyncInitial, last.initialResult.robots[0]?.ms);
      fig('initial_vs_rsync_best', Math.min(...ours.map((r) => r.initial)) / Math.min(...rsyncInitial));
      fig('initial_timeline_ms', JSON.stringify(initialTimeline));
      fig('initial_worker_cpu_rounds_s', list(cpuOf.ours.client));
      fig('initial_robot_cpu_rounds_s', list(cpuOf.ours.robot));
      fig('baseline_rsync_initial_client_cpu_rounds_s', list(cpuOf.rsync.client));
      fig('baseline_rsync_initial_robot_cpu_rounds_s', list(cpuOf.rsync.robot));
      phase('noop', ours.map((r) => r.noop), rsyncNoop, last.noopResult.robots[0]?.ms);
      fig('context_raw_driver_read_perfect_state_s', dbReadS);
      const wrong = ours.filter((r) => r.initialResult.totals.uploaded.files !== files || r.noopResult.totals.sentBytes !== 0 || r.noopResult.totals.uploaded.files !== 0 || !r.noopResult.robots[0]?.unchanged);
      if (wrong.length > 0) {
        throw new Error(`benchmark run did not sync correctly: ${JSON.stringify({ wrong: wrong.map((r) => ({ initial: r.initialResult.robots, noop: r.noopResult.robots })) })}`);
      }
    }
  } finally {
    for (const c of children) c.proc.kill('SIGTERM');
    await Promise.all(children.map((c) => (c.proc.exitCode === null ? new Promise((r) => c.proc.once('exit', r)) : undefined)));
    await Promise.allSettled([db.close(), connection.close()]);
    await stackDown(cfg);
  }
}
