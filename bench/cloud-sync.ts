// `npm run bench -- cloud-sync [--sessions 100000] [--children 10000] [--rf-mib 1024] [--rounds 5]
//                               [--only sync|download] [--port-offset 0]`
//
// 1. POST /api/v1/sync carrying 10,000 children and 100,000 sessions (new to the cloud): the server's time for
//    the request (`server_ms` of the answer). Baseline, same run, same server: the raw `mongodb` driver writing
//    the same documents into empty collections with insertMany in chunks of 50, as many in flight as the server
//    uses (the FerretDB habit every writer here follows).
// 2. Second syncs carrying 0.1%, 1% and 10% of those records changed: the server time of each. Floor of each, same
//    run: the raw driver replacing the same records in its copy (deleteMany of their ids, then insertMany in chunks
//    of 50), the least any writer does to replace documents on this server. The pair shows how our cost scales
//    with the change next to how the server's own floor scales (on FerretDB every filtered statement scans).
// 3. The diff of cloud sync (perfect state − inventory − cache) over 100,000 paths: its time.
// 4. A 1 GiB RF downloaded through the cloud API by the offline app's resumable download (sha256 included)
//    against curl, in `--rounds` rounds after an untimed warm-up. Both sides write to the same file system and
//    end durable (curl's file gets the same fsync + rename + directory fsync as ours); the order alternates per
//    round and each side starts after a `sync`. Per-round figures, then the median of the per-round ratios
//    (headline), the ratio of the medians, best-of and the worst round. Then the same download SIGKILLed at about 50% and resumed in a new process: bytes fetched beyond the
//    file's size.
// It runs on its own stack (own ports, data under .data/bench-cloud-sync) so it never disturbs `npm start` or tests.
import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { MongoClient, type Document } from 'mongodb';
import { createS3Client } from '../activities/s3/client';
import { missingRfs } from '../activities/db/cloud-sync';
import { downloadResumable } from '../activities/http/download';
import { seedCloudSync } from '../api/cloud-sync/seed';
import { DELETE_BATCH, UPSERT_CONCURRENCY } from '../api/cloud-sync/upsert';
import { commitFile } from '../activities/files/rf-cache';
import type { SyncResponse } from '../api/cloud-sync/router';
import { OFFLINE_APP_VERSION } from '../activities/http/cloud-sync';
import { mapLimited } from '../api/ota/jobs-service';
import { loadConfig, repoRoot } from '../common/config';
import { chunks, connectDb } from '../common/db';
import { stackDown, stackUp } from '../infra/stack';
import { flag } from './common';

// Ports apart from bench/ota-fleet.ts's (both can run side by side with the same --port-offset).
const BENCH_ENV: Record<string, string> = {
  TEMPORAL_PORT: '22733',
  TEMPORAL_UI_PORT: '23733',
  MONGO_PORT: '22517',
  S3_PORT: '22570',
  MQTT_PORT: '19383',
  MQTT_CLOUD_PORT: '19384',
  FLEET_SSH_BASE_PORT: '19701',
  API_PORT: '24505',
  OFFLINE_API_PORT: '23580',
  LOG_LEVEL: 'warn',
  // A resync's filtered statements scan the whole collection on FerretDB; on a loaded shared machine one took
  // longer than the default 30 s socket limit (3 x 10 s). The benchmark measures time; it must not fail on it.
  MONGO_TIMEOUT_MS: '60000',
};

const fig = (k: string, v: number | string) => console.log(`${k}=${typeof v === 'number' ? Number(v.toFixed(3)) : v}`);
const seconds = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e9;
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** Shares of the records changed in the resyncs, in percent. */
const RESYNC_PCTS = [0.1, 1, 10];
const pctKey = (pct: number) => `${String(pct).replace('.', 'p')}pct`;

/** Runs a process to its end; `watch` is called every 5 ms while it runs (the kill-at-50% trigger). */
function spawnWait(command: string, args: string[], env: NodeJS.ProcessEnv, onOut?: (text: string) => void, watch?: (p: ChildProcess) => void): Promise<number> {
  return new Promise((resolve, reject) => {
    const p = spawn(command, args, { cwd: repoRoot, env, stdio: ['ignore', 'pipe', 'inherit'] });
    const timer = watch ? setInterval(() => watch(p), 5) : null;
    p.stdout!.on('data', (d: Buffer) => onOut?.(d.toString()));
    p.on('error', reject);
    p.on('exit', (code, signal) => {
      if (timer) clearInterval(timer);
      resolve(code ?? (signal ? 128 : -1));
    });
  });
}

function records(n: number, prefix: string, at: Date) {
  return Array.from({ length: n }, (_, i) => ({
    id: `${prefix}-${String(i).padStart(7, '0')}`,
    updated_at: at.toISOString(),
    data: prefix === 'session'
      ? { child_id: `child-${String(i % 10000).padStart(7, '0')}`, started_at: at.toISOString(), duration_s: 600 + (i % 1200), actions: ['act-wave', 'act-smile'], score: i % 5, notes: 'calm, engaged' }
      : { first_name: `Child${i}`, last_name: 'Doe', birth_year: 2015 + (i % 8), goals: ['skill-eye-contact'] },
  }));
}

export async function main(args: string[]): Promise<void> {
  const nSessions = flag(args, '--sessions', 100_000);
  const nChildren = flag(args, '--children', 10_000);
  const rfMib = flag(args, '--rf-mib', 1024);
  const rounds = flag(args, '--rounds', 5);
  const only = args.includes('--only') ? args[args.indexOf('--only') + 1] : null;
  if (only !== null && only !== 'sync' && only !== 'download') throw new Error('--only takes sync or download');
  const parts = new Set(only ? [only] : ['sync', 'download']);
  const offset = flag(args, '--port-offset', 0);
  const shifted = Object.fromEntries(Object.entries(BENCH_ENV).map(([k, v]) => [k, /_PORT$/.test(k) ? String(Number(v) + offset) : v]));
  const apiPort = Number(shifted.API_PORT);
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    ...shifted,
    API_PUBLIC_URL: `http://127.0.0.1:${apiPort}`,
    FLEET_DATA_DIR: path.join(repoRoot, '.data', `bench-cloud-sync${offset ? `-${offset}` : ''}`),
    FLEET_ROBOTS: '1',
    MONGO_DB: 'bench_cloud',
  };
  const cfg = loadConfig(env);
  const say = (l: string) => process.stderr.write(`[bench] ${l}\n`);
  try {
    await stackUp(cfg, { robots: 1, sshd: false, log: say });
  } catch (e) {
    await stackDown(cfg); // what did start must not outlive the benchmark
    throw e;
  }
  const db = await connectDb(cfg);
  const raw = new MongoClient(cfg.mongo.url, { retryWrites: false, serverSelectionTimeoutMS: cfg.mongo.timeoutMs });
  const s3 = createS3Client(cfg);
  let api: ChildProcess | null = null;
  const work = path.join(cfg.dataDir, 'work');
  try {
    // Fresh collections for both writers.
    await db.connection.dropDatabase();
    await raw.connect();
    await raw.db('bench_raw').dropDatabase();
    const rfName = `bench-${rfMib}mib.bin`;
    const seed = await seedCloudSync(cfg, db, s3, {
      dataSet: { center: { id: 'bench-center', name: 'Bench' }, version_maps: [{ version: OFFLINE_APP_VERSION, compatible: true, migrations: [] }], categories: [], skills: [], actions: [], rfs: [{ name: rfName, size: rfMib * 1024 * 1024, path: `rf/${rfName}` }], large_rfs: [] },
      robots: [{ id: 'bench-robot', rfRoot: '/opt/rf' }],
      tokenTtl: '2h',
    });
    const apiOut: string[] = [];
    api = spawn(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'api/main.ts')], { cwd: repoRoot, env: { ...env, LOG_LEVEL: 'info' }, stdio: ['ignore', 'pipe', 'pipe'] });
    api.stdout!.on('data', (d: Buffer) => apiOut.push(d.toString()));
    api.stderr!.on('data', (d: Buffer) => apiOut.push(d.toString()));
    const deadline = Date.now() + 90000;
    while (!apiOut.join('').includes('OTA API listening')) {
      if (Date.now() > deadline || api.exitCode !== null) throw new Error(`API did not start:\n${apiOut.join('')}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const base = `http://127.0.0.1:${apiPort}/api/v1`;
    const auth = { authorization: `Bearer ${seed.token}` };
    // node:http rather than fetch: fetch gives up after 5 minutes without a response head, and a 10% resync on a
    // loaded machine's FerretDB can take longer; the benchmark measures it instead.
    const postSync = (body: unknown): Promise<SyncResponse> =>
      new Promise((resolve, reject) => {
        const data = JSON.stringify(body);
        const req = http.request(`${base}/sync`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } }, (res) => {
          const parts: Buffer[] = [];
          res.on('data', (d: Buffer) => parts.push(d));
          res.on('error', reject);
          res.on('end', () => {
            const text = Buffer.concat(parts).toString('utf8');
            if (res.statusCode !== 200) reject(new Error(`/sync answered ${res.statusCode}: ${text}\n${apiOut.join('').slice(-3000)}`));
            else resolve(JSON.parse(text) as SyncResponse);
          });
        });
        req.on('error', (e) => reject(new Error(`/sync failed: ${e.message}\n${apiOut.join('').slice(-3000)}`)));
        req.end(data);
      });

    // 1. Full sync vs the raw driver.
    if (parts.has('sync')) {
      const at = new Date('2026-11-01T08:00:00Z');
      const sessions = records(nSessions, 'session', at);
      const children = records(nChildren, 'child', at);
      say(`POST /sync with ${nSessions} sessions + ${nChildren} children`);
      const t1 = process.hrtime.bigint();
      const full = await postSync({ app_version: OFFLINE_APP_VERSION, sessions, children, inventories: [] });
      const fullWall = seconds(t1);
      if (full.upstream.sessions.inserted !== nSessions || full.upstream.children.inserted !== nChildren) throw new Error(`unexpected upsert counts ${JSON.stringify(full.upstream)}`);
      say('raw driver baseline');
      const rawDb = raw.db('bench_raw');
      const asDocs = (recs: { id: string; updated_at: string; data: object }[]): Document[] =>
        recs.map((r) => ({ _id: `bench-center|${r.id}`, center_id: 'bench-center', updated_at: new Date(r.updated_at), data: r.data, app_version: OFFLINE_APP_VERSION, migrations: [] }));
      const t2 = process.hrtime.bigint();
      for (const [name, recs] of [['sessions', sessions], ['children', children]] as const) {
        const coll = rawDb.collection(name);
        await mapLimited(chunks(asDocs(recs)), UPSERT_CONCURRENCY, (part) => coll.insertMany(part, { ordered: false }));
      }
      const driverS = seconds(t2);
      // Printed as soon as measured: a later part that fails (FerretDB limits at large scale) keeps these.
      fig('sessions', nSessions);
      fig('children', nChildren);
      fig('sync_100k_s', full.server_ms / 1000);
      fig('sync_100k_wall_s', fullWall);
      fig('baseline_driver_s', driverS);
      fig('sync_vs_driver', full.server_ms / 1000 / driverS);

      // 2. Resyncs with 0.1%, 1% and 10% of the records changed, each against the raw driver's floor of the same
      //    replacement on its copy: how our cost grows with the change, next to how the server's own floor grows.
      for (const [i, pct] of RESYNC_PCTS.entries()) {
        const every = Math.round(100 / pct);
        const later = new Date(at.getTime() + (i + 1) * 3600_000).toISOString();
        const changedS = sessions.filter((_, k) => k % every === 0).map((r) => ({ ...r, updated_at: later, data: { ...r.data, score: i } }));
        const changedC = children.filter((_, k) => k % every === 0).map((r) => ({ ...r, updated_at: later, data: { ...r.data, goals: [`g${i}`] } }));
        const key = pctKey(pct);
        say(`POST /sync with ${pct}% changed (${changedS.length + changedC.length} records)`);
        const resync = await postSync({ app_version: OFFLINE_APP_VERSION, sessions: changedS, children: changedC, inventories: [] });
        if (resync.upstream.sessions.updated !== changedS.length || resync.upstream.children.updated !== changedC.length) {
          throw new Error(`unexpected resync counts ${JSON.stringify(resync.upstream)}`);
        }
        say(`raw driver floor of the ${pct}% resync`);
        const t2b = process.hrtime.bigint();
        for (const [name, recs] of [['sessions', changedS], ['children', changedC]] as const) {
          const coll = rawDb.collection(name);
          const docs = asDocs(recs);
          // Ids in DELETE_BATCHes, as the upsert sends them (FerretDB matches a long $in linearly per document).
          for (const ids of chunks(docs.map((d) => d._id as string), DELETE_BATCH)) {
            await coll.deleteMany({ _id: { $in: ids } } as Document, { maxTimeMS: cfg.mongo.timeoutMs * 3 });
          }
          for (const part of chunks(docs)) await coll.insertMany(part, { ordered: false });
        }
        const floorS = seconds(t2b);
        fig(`resync_${key}_records`, changedS.length + changedC.length);
        fig(`resync_${key}_s`, resync.server_ms / 1000);
        fig(`baseline_resync_driver_${key}_s`, floorS);
        fig(`resync_vs_driver_${key}`, resync.server_ms / 1000 / floorS);
        if (pct === 1) {
          // The issue's names for the 1% case.
          fig('resync_vs_full', resync.server_ms / full.server_ms);
          fig('baseline_resync_driver_s', floorS);
          fig('resync_vs_driver', resync.server_ms / 1000 / floorS);
        }
      }

    }

    // 3. The diff over 100k paths.
    const perfect = Array.from({ length: 100_000 }, (_, i) => ({ robot_id: `r${i % 10}`, path: `/opt/rf/p${i}`, sha256: crypto.createHash('sha256').update(String(i % 50_000)).digest('hex'), size: 1000, url: `u${i}` }));
    const inventory = perfect.filter((_, i) => i % 3 === 0);
    const cached = new Set(perfect.filter((_, i) => i % 7 === 0).map((e) => e.sha256));
    const t3 = process.hrtime.bigint();
    const diff = missingRfs(perfect, inventory, cached);
    fig('diff_100k_paths_s', seconds(t3));
    fig('diff_missing', diff.missing.length);

    // 4. 1 GiB RF download (sha256 included) vs curl, round after round, then kill at ~50% and resume.
    if (parts.has('download')) {
      fs.rmSync(work, { recursive: true, force: true });
      fs.mkdirSync(work, { recursive: true });
      const rf = (await db.cloudSync.Rf.findById(rfName).lean())!;
      const url = `${base}/sync/rf/${rfName}`;
      const curl = (out: string) => ['-sS', '--fail', '-o', out, '-H', `Authorization: Bearer ${seed.token}`, url];
      // Warm-up, untimed: the object in the S3 server's page cache, the API's code paths compiled.
      say(`download of ${rfMib} MiB: warm-up`);
      if ((await spawnWait('curl', curl('/dev/null'), env)) !== 0) throw new Error('warm-up curl failed');
      // Both sides end durable on the same file system: curl writes a `.part` that gets the same fsync + rename +
      // directory fsync (commitFile) as ours, which also hashes (sha256) while it downloads.
      // Each side reports its wall time, the part of it spent in the final fsync, and its CPU time (user + system;
      // a figure the neighbours' load barely moves, unlike wall times on this shared machine).
      type Run = { s: number; fsyncS: number; cpuS: number };
      const sides: Record<'curl' | 'ours', () => Promise<Run>> = {
        curl: async () => {
          const out = path.join(work, 'curl.bin');
          const t = process.hrtime.bigint();
          // bash's `times` prints the CPU time of its children (curl) on its second line.
          let timesOut = '';
          const code = await spawnWait('bash', ['-c', 'curl "$@" && times', 'curl', ...curl(`${out}.part`)], env, (text) => (timesOut += text));
          if (code !== 0) throw new Error(`curl exited ${code}`);
          const received = process.hrtime.bigint();
          await commitFile(`${out}.part`, out);
          const s = seconds(t);
          fs.rmSync(out);
          const [user, sys] = [...(timesOut.trim().split('\n')[1] ?? '').matchAll(/(\d+)m([\d.]+)s/g)].map((m) => Number(m[1]) * 60 + Number(m[2]));
          return { s, fsyncS: seconds(received), cpuS: user + sys };
        },
        ours: async () => {
          const out = path.join(work, 'ours.bin');
          let received = 0n;
          const cpu = process.cpuUsage();
          const t = process.hrtime.bigint();
          await downloadResumable({ url, sha256: rf.sha256, size: rf.size, target: out }, seed.token, (offset) => {
            if (offset === rf.size) received = process.hrtime.bigint();
          });
          const s = seconds(t);
          const used = process.cpuUsage(cpu);
          fs.rmSync(out);
          return { s, fsyncS: received ? seconds(received) : NaN, cpuS: (used.user + used.system) / 1e6 };
        },
      };
      const runs = { curl: [] as Run[], ours: [] as Run[] };
      for (let round = 1; round <= rounds; round++) {
        // Alternate who goes first (a neighbour's burst or our own writeback then hits both sides alike); each
        // side starts with the dirty pages of the machine written out.
        const order = round % 2 ? (['curl', 'ours'] as const) : (['ours', 'curl'] as const);
        for (const side of order) {
          await spawnWait('sync', [], env);
          runs[side].push(await sides[side]());
        }
        const [c, o] = [runs.curl[round - 1], runs.ours[round - 1]];
        const f = (x: number) => x.toFixed(2);
        fig(`download_round_${round}`, `curl_s:${f(c.s)},ours_s:${f(o.s)},ratio:${(c.s / o.s).toFixed(3)},first:${order[0]},curl_fsync_s:${f(c.fsyncS)},ours_fsync_s:${f(o.fsyncS)},curl_cpu_s:${f(c.cpuS)},ours_cpu_s:${f(o.cpuS)}`);
      }
      const times = { curl: runs.curl.map((r) => r.s), ours: runs.ours.map((r) => r.s) };
      const med = { curl: median(times.curl), ours: median(times.ours) };
      const ratios = times.curl.map((c, i) => c / times.ours[i]);

      const target = path.join(work, 'resumed.bin');
      const childEnv = { ...env, CENTER_JWT: seed.token };
      const childArgs = ['--import', 'tsx', path.join(repoRoot, 'bench/download-once.ts'), url, rf.sha256, String(rf.size), target];
      await spawnWait(process.execPath, childArgs, childEnv, undefined, (p) => {
        if (p.exitCode === null && fs.existsSync(`${target}.part`) && fs.statSync(`${target}.part`).size >= rf.size / 2) p.kill('SIGKILL');
      });
      if (fs.existsSync(target)) throw new Error('the download finished before it could be killed at 50%');
      const kept = fs.statSync(`${target}.part`).size;
      let fetched = 0;
      await spawnWait(process.execPath, childArgs, childEnv, (text) => {
        const m = /done fetched=(\d+)/.exec(text);
        if (m) fetched = Number(m[1]);
      });
      if (!fs.existsSync(target)) throw new Error('resumed download did not complete');
      fs.rmSync(target);

      fig('download_mib', rfMib);
      fig('download_rounds', rounds);
      fig('download_s', med.ours);
      fig('baseline_curl_s', med.curl);
      // Headline: the median of the per-round ratios (the two sides of a round ran back to back, under the same
      // neighbours' load); then the ratio of the medians, the best of each side and the worst single round.
      fig('download_vs_curl', median(ratios));
      fig('download_vs_curl_of_medians', med.curl / med.ours);
      fig('download_vs_curl_best', Math.min(...times.curl) / Math.min(...times.ours));
      fig('download_vs_curl_worst_round', Math.min(...ratios));
      fig('download_mib_s', rfMib / med.ours);
      fig('baseline_curl_mib_s', rfMib / med.curl);
      fig('download_cpu_s', median(runs.ours.map((r) => r.cpuS)));
      fig('baseline_curl_cpu_s', median(runs.curl.map((r) => r.cpuS)));
      fig('resume_killed_at_pct', (100 * kept) / rf.size);
      fig('resume_extra_bytes_pct', (100 * (kept + fetched - rf.size)) / rf.size);
    }
  } finally {
    api?.kill('SIGTERM');
    if (api && api.exitCode === null) await new Promise((r) => api!.once('exit', r));
    fs.rmSync(work, { recursive: true, force: true });
    s3.destroy();
    await raw.close();
    await db.close();
    await stackDown(cfg);
  }
}
