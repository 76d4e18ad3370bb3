// Job handling without a broker: idempotent deploys, cancel, ack, resumption after a restart, the state map,
// and the reporter's publishing cadence.
import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createLogger } from '../../common/logger';
import { stateMessageSchema, type DeployMessage, type JobReport, type StateMessage } from '../../common/protocol';
import { partPaths } from '../../daemon/download';
import { KeyedMutex } from '../../daemon/fs-util';
import { JobManager, type ChangeKind } from '../../daemon/jobs';
import { Journal } from '../../daemon/journal';
import { realRoots } from '../../daemon/paths';
import { StateReporter } from '../../daemon/reporter';
import { sha256, startObjectServer, type ObjectServer } from './http-fixture';

const MiB = 1 << 20;
let server: ObjectServer;
let tmp: string;
let root: string;
let stateDir: string;

beforeAll(async () => {
  server = await startObjectServer();
});
afterAll(() => server.close());
beforeEach(() => {
  tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'ota-jobs-')));
  root = path.join(tmp, 'root');
  stateDir = path.join(tmp, 'state');
  fs.mkdirSync(root);
  fs.mkdirSync(stateDir);
  server.reset();
  server.cutAfter(null);
  server.release();
});
afterEach(() => {
  jest.restoreAllMocks();
  fs.rmSync(tmp, { recursive: true, force: true });
});

interface Harness {
  jobs: JobManager;
  journal: Journal;
  changes: ChangeKind[];
  replays: [string, JobReport][];
}

async function harness(maxConcurrent = 2): Promise<Harness> {
  const log = createLogger('test', 'silent');
  const journal = await Journal.open(stateDir, log);
  const changes: ChangeKind[] = [];
  const replays: [string, JobReport][] = [];
  const jobs = new JobManager({
    journal,
    env: { roots: await realRoots([root]), forbidden: [stateDir], locks: new KeyedMutex(), log, retry: { attempts: 2, baseDelayMs: 10, maxDelayMs: 10 } },
    maxConcurrent,
    log,
    onChange: (k) => changes.push(k),
    onReplay: (id, r) => replays.push([id, r]),
  });
  return { jobs, journal, changes, replays };
}

function message(id: string, name: string, body: Buffer, extra: Partial<DeployMessage> = {}): DeployMessage {
  server.put(name, body);
  return {
    job_id: id,
    s3_bucket: 'files',
    s3_object_name: name,
    deploy_path: path.join(root, `${name}.bin`),
    url: server.url(name),
    sha256: sha256(body),
    size: body.length,
    ...extra,
  };
}

/** Resolves once the target's .part holds `bytes` (writes are batched by 1 MiB, so ask for less than the hold). */
async function waitForPart(target: string, bytes: number): Promise<void> {
  const { part } = partPaths(target);
  for (let i = 0; i < 1000; i++) {
    if ((fs.statSync(part, { throwIfNoEntry: false })?.size ?? 0) >= bytes) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`${part} never reached ${bytes} bytes`);
}

describe('JobManager', () => {
  test('a deploy ends COMPLETED in the state map with the bytes on disk', async () => {
    const h = await harness();
    const body = crypto.randomBytes(MiB);
    const m = message('job-1', 'one', body);
    await h.jobs.deploy(m);
    expect(h.jobs.stateMap()['job-1']?.status).toMatch(/RECEIVED|DOWNLOADING/);
    await h.jobs.idle();
    const map = h.jobs.stateMap();
    expect(stateMessageSchema.parse(map)).toEqual({ 'job-1': { status: 'COMPLETED', error_msg: null, progress: 100 } });
    expect(fs.readFileSync(m.deploy_path).equals(body)).toBe(true);
    expect(h.changes).toContain('status');
  });

  test('a redelivered deploy of a finished job is re-reported, not downloaded again, even after a restart', async () => {
    const body = crypto.randomBytes(64 * 1024);
    const m = message('job-dup', 'dup', body);
    const first = await harness();
    await first.jobs.deploy(m);
    await first.jobs.idle();
    server.reset();

    const restarted = await harness();
    await restarted.jobs.deploy(m);
    await restarted.jobs.idle();
    expect(server.requests()).toEqual([]);
    expect(restarted.jobs.stateMap()['job-dup']?.status).toBe('COMPLETED');

    await restarted.jobs.ack('job-dup');
    expect(restarted.jobs.stateMap()).toEqual({});
    await restarted.jobs.deploy(m);
    expect(restarted.replays).toEqual([['job-dup', { status: 'COMPLETED', error_msg: null, progress: 100 }]]);
    expect(server.requests()).toEqual([]);
  });

  test('a failure is reported FAILED with a message that carries no URL', async () => {
    const h = await harness();
    const m = { ...message('job-404', 'x', Buffer.from('x')), url: server.url('does-not-exist') };
    await h.jobs.deploy(m);
    await h.jobs.idle();
    const report = h.jobs.stateMap()['job-404'];
    expect(report).toEqual({ status: 'FAILED', error_msg: 'download failed: HTTP 404 Not Found' });
  });

  test('cancel aborts an in-flight download: nothing installed, no .part, no longer reported, redelivery ignored', async () => {
    const h = await harness();
    const body = crypto.randomBytes(32 * MiB);
    const target = path.join(root, 'big.bin');
    fs.writeFileSync(target, 'old');
    const m = { ...message('job-big', 'big', body), deploy_path: target };
    server.holdAfter(4 * MiB);
    await h.jobs.deploy(m);
    await waitForPart(target, 2 * MiB);
    await h.jobs.cancel('job-big');
    server.release();
    await h.jobs.idle();
    expect(fs.readFileSync(target, 'utf8')).toBe('old');
    expect(fs.readdirSync(root)).toEqual(['big.bin']);
    expect(h.jobs.stateMap()).toEqual({});

    server.reset();
    await h.jobs.deploy(m);
    await h.jobs.idle();
    expect(server.requests()).toEqual([]);
  });

  test.each([
    ['COMPLETED', (m: DeployMessage) => m, { status: 'COMPLETED', error_msg: null, progress: 100 }],
    ['FAILED', (m: DeployMessage) => ({ ...m, url: server.url('missing') }), { status: 'FAILED', error_msg: 'download failed: HTTP 404 Not Found' }],
  ] as const)('a cancel for a %s job is ignored: its real outcome is reported until acked', async (_status, shape, report) => {
    const h = await harness();
    const m = shape(message('job-done', 'done', Buffer.from('payload')));
    await h.jobs.deploy(m);
    await h.jobs.idle();
    expect(h.jobs.stateMap()).toEqual({ 'job-done': report });

    await h.jobs.cancel('job-done');
    expect(h.jobs.stateMap()).toEqual({ 'job-done': report });
    // Across a restart too, and a redelivered deploy is re-reported, not ignored as canceled.
    const restarted = await harness();
    expect(restarted.jobs.stateMap()).toEqual({ 'job-done': report });
    server.reset();
    await restarted.jobs.deploy(m);
    await restarted.jobs.idle();
    expect(server.requests()).toEqual([]);
    expect(restarted.jobs.stateMap()).toEqual({ 'job-done': report });

    await restarted.jobs.ack('job-done');
    expect(restarted.jobs.stateMap()).toEqual({});
  });

  test('a cancel processed once the final rename has started is too late: the job reports COMPLETED', async () => {
    const h = await harness();
    const body = crypto.randomBytes(MiB);
    const target = path.join(root, 'late.bin');
    fs.writeFileSync(target, 'old');
    const m = { ...message('job-late', 'late', body), deploy_path: target };
    const realRename = fsp.rename.bind(fsp);
    let cancel: Promise<void> | null = null;
    let mapAfterCancel: StateMessage | null = null;
    jest.spyOn(fsp, 'rename').mockImplementation((from, to) => {
      const renaming = realRename(from, to);
      if (to === target) {
        // The cancel message is handled while the rename runs (it is in the libuv pool, not on this thread).
        cancel = h.jobs.cancel('job-late');
        mapAfterCancel = h.jobs.stateMap();
      }
      return renaming;
    });
    await h.jobs.deploy(m);
    await h.jobs.idle();
    await cancel;
    expect(cancel).not.toBeNull();
    // Never a moment where the job looks canceled while its file is going in, nor one recorded as canceled.
    expect(Object.keys(mapAfterCancel ?? {})).toEqual(['job-late']);
    expect(h.journal.get('job-late')).toMatchObject({ canceled: false, status: 'COMPLETED' });
    expect(fs.readFileSync(target).equals(body)).toBe(true);
    expect(h.jobs.stateMap()).toEqual({ 'job-late': { status: 'COMPLETED', error_msg: null, progress: 100 } });
    const restarted = await harness();
    expect(restarted.jobs.stateMap()['job-late']?.status).toBe('COMPLETED');
  });

  test('a cancel processed after the download but before the rename installs nothing', async () => {
    const h = await harness();
    const body = crypto.randomBytes(MiB);
    const target = path.join(root, 'verified.bin');
    fs.writeFileSync(target, 'old');
    const m = { ...message('job-verified', 'verified', body), deploy_path: target };
    const realOpen = fsp.open.bind(fsp);
    let cancel: Promise<void> | null = null;
    jest.spyOn(fsp, 'open').mockImplementation((file, flags, mode) => {
      // The install step opens the verified .part to set its mode and fsync it (the download opened it with 'w').
      if (file === partPaths(target).part && flags === 'r+') cancel = h.jobs.cancel('job-verified');
      return realOpen(file, flags, mode);
    });
    await h.jobs.deploy(m);
    await h.jobs.idle();
    await cancel;
    expect(cancel).not.toBeNull();
    expect(fs.readFileSync(target, 'utf8')).toBe('old');
    expect(fs.readdirSync(root)).toEqual(['verified.bin']);
    expect(h.jobs.stateMap()).toEqual({});
  });

  test('a deploy whose journal write fails still runs and is reported; the journal catches up on the next write', async () => {
    const h = await harness();
    const body = crypto.randomBytes(64 * 1024);
    const m = message('job-enospc', 'enospc', body);
    // A directory where the journal's temporary file goes makes the write fail for real (as ENOSPC would).
    const blocker = `${h.journal.file}.tmp-${process.pid}`;
    fs.mkdirSync(blocker);
    await expect(h.jobs.deploy(m)).resolves.toBeUndefined(); // the MQTT handler then PUBACKs: the job is ours now
    expect(h.jobs.stateMap()['job-enospc']?.status).toMatch(/RECEIVED|DOWNLOADING/);
    fs.rmdirSync(blocker);
    await h.jobs.idle();
    expect(h.jobs.stateMap()).toEqual({ 'job-enospc': { status: 'COMPLETED', error_msg: null, progress: 100 } });
    expect(fs.readFileSync(m.deploy_path).equals(body)).toBe(true);
    const restarted = await harness();
    expect(restarted.journal.get('job-enospc')).toMatchObject({ status: 'COMPLETED' });
  });

  test('a cancel that overtakes its deploy makes the deploy a no-op, across a restart too', async () => {
    const first = await harness();
    await first.jobs.cancel('job-early');
    const h = await harness();
    await h.jobs.deploy(message('job-early', 'early', Buffer.from('data')));
    await h.jobs.idle();
    expect(server.requests()).toEqual([]);
    expect(fs.existsSync(path.join(root, 'early.bin'))).toBe(false);
    expect(h.jobs.stateMap()).toEqual({});
  });

  test('a download interrupted by a stop resumes from its .part at the next start', async () => {
    const body = crypto.randomBytes(16 * MiB);
    const m = message('job-resume', 'resume', body);
    const first = await harness();
    server.holdAfter(5 * MiB);
    await first.jobs.deploy(m);
    const { part } = partPaths(m.deploy_path);
    await waitForPart(m.deploy_path, 3 * MiB);
    await first.jobs.stop();
    server.release();
    const kept = fs.statSync(part).size;
    expect(kept).toBeGreaterThanOrEqual(3 * MiB);
    expect(kept).toBeLessThanOrEqual(5 * MiB);
    server.reset();

    const second = await harness();
    expect(second.jobs.stateMap()['job-resume']?.status).toBe('DOWNLOADING');
    second.jobs.resumeUnfinished();
    await second.jobs.idle();
    expect(second.jobs.stateMap()['job-resume']?.status).toBe('COMPLETED');
    expect(server.bytesSent()).toBe(body.length - kept);
    expect(fs.readFileSync(m.deploy_path).equals(body)).toBe(true);
  });

  test('runs at most max_concurrent_jobs downloads at once', async () => {
    const h = await harness(1);
    const a = message('job-a', 'a', crypto.randomBytes(4 * MiB));
    const b = message('job-b', 'b', crypto.randomBytes(4 * MiB));
    await h.jobs.deploy(a);
    await h.jobs.deploy(b);
    expect(h.jobs.stateMap()['job-b']?.status).toBe('RECEIVED');
    await h.jobs.idle();
    expect(h.jobs.stateMap()['job-b']?.status).toBe('COMPLETED');
    // One request at a time: b's request came after a's finished.
    expect(server.requests().map((r) => r.name)).toEqual(['a', 'b']);
  });

  test('a redelivered deploy of a queued job refreshes its download URL (the stored one may have expired)', async () => {
    const h = await harness(1);
    const blocker = message('job-blocker', 'blocker', crypto.randomBytes(4 * MiB));
    const body = Buffer.from('payload');
    const queued = { ...message('job-q', 'q', body), url: server.url('expired') };
    await h.jobs.deploy(blocker);
    await h.jobs.deploy(queued);
    await h.jobs.deploy({ ...queued, url: server.url('q') });
    await h.jobs.idle();
    expect(h.jobs.stateMap()['job-q']?.status).toBe('COMPLETED');
  });
});

describe('StateReporter', () => {
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => jest.useRealTimers());

  test('publishes status changes at once (coalesced), progress at most once a second, and a heartbeat', () => {
    const published: number[] = [];
    const r = new StateReporter({ publish: () => published.push(Date.now()), heartbeatMs: 30000, progressIntervalMs: 1000 });
    r.start();
    r.statusChanged();
    r.statusChanged();
    jest.advanceTimersByTime(1);
    expect(published).toHaveLength(1);

    for (let i = 0; i < 50; i++) {
      r.progressChanged();
      jest.advanceTimersByTime(100);
    }
    // 5 s of progress ticks every 100 ms → about one publish per second.
    expect(published.length - 1).toBeGreaterThanOrEqual(4);
    expect(published.length - 1).toBeLessThanOrEqual(6);

    const before = published.length;
    jest.advanceTimersByTime(30000);
    expect(published.length).toBe(before + 1);
    r.stop();
  });
});

test('state map entries follow the shared protocol schema', async () => {
  const h = await harness();
  await h.jobs.deploy(message('job-s', 's', Buffer.from('abc')));
  const snapshots: StateMessage[] = [h.jobs.stateMap()];
  await h.jobs.idle();
  snapshots.push(h.jobs.stateMap());
  for (const s of snapshots) expect(() => stateMessageSchema.parse(s)).not.toThrow();
});
