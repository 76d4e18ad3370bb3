// The journal survives restarts, is written atomically, dedupes by job id and forgets old acked jobs.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createLogger } from '../../common/logger';
import type { DeployMessage } from '../../common/protocol';
import { Journal } from '../../daemon/journal';

const log = createLogger('test', 'silent');
let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ota-journal-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const msg = (id: string): DeployMessage => ({
  job_id: id,
  s3_bucket: 'files',
  s3_object_name: `${id}.bin`,
  deploy_path: `/opt/robot/${id}.bin`,
  url: `http://s3.local/files/${id}.bin?X-Amz-Signature=abc`,
});

describe('Journal', () => {
  test('persists statuses across a reopen, atomically and private to the daemon', async () => {
    const j = await Journal.open(dir, log);
    j.accept(msg('a'));
    j.accept(msg('b'));
    j.update('a', { status: 'COMPLETED' });
    j.update('b', { status: 'FAILED', error_msg: 'sha256 mismatch: expected x, got y' });
    await j.flush();
    expect(fs.readdirSync(dir)).toEqual(['journal.json']);
    expect(fs.statSync(path.join(dir, 'journal.json')).mode & 0o777).toBe(0o600);

    const again = await Journal.open(dir, log);
    expect(again.get('a')).toMatchObject({ status: 'COMPLETED', message: msg('a') });
    expect(again.get('b')).toMatchObject({ status: 'FAILED', error_msg: 'sha256 mismatch: expected x, got y' });
    expect(again.reportable().map((e) => e.job_id)).toEqual(['a', 'b']);
  });

  test('lists unfinished jobs for resumption, excluding canceled and acked ones', async () => {
    let t = 1000;
    const j = await Journal.open(dir, log, { now: () => t++ });
    for (const id of ['r', 'd', 'c', 'x', 'k']) j.accept(msg(id));
    j.update('d', { status: 'DOWNLOADING' });
    j.update('c', { status: 'COMPLETED' });
    j.update('x', { canceled: true });
    j.update('k', { acked: true });
    await j.flush();
    const again = await Journal.open(dir, log);
    expect(again.unfinished().map((e) => e.job_id)).toEqual(['r', 'd']);
  });

  test('an acked or canceled job keeps only its id (no URL on disk) and leaves the report', async () => {
    const j = await Journal.open(dir, log);
    j.accept(msg('a'));
    j.update('a', { status: 'COMPLETED' });
    j.update('a', { acked: true });
    j.rememberCanceled('early');
    await j.flush();
    const text = fs.readFileSync(path.join(dir, 'journal.json'), 'utf8');
    expect(text).not.toContain('X-Amz-Signature');
    const again = await Journal.open(dir, log);
    expect(again.get('a')).toMatchObject({ acked: true, message: null, status: 'COMPLETED' });
    expect(again.get('early')).toMatchObject({ canceled: true, status: null });
    expect(again.reportable()).toEqual([]);
  });

  test('a finished job marked canceled by an older daemon is still reported until acked', async () => {
    // Older daemons marked a job canceled even when the cancel arrived after it had finished.
    const entry = (id: string, status: string | null) => ({
      job_id: id,
      message: null,
      status,
      error_msg: status === 'FAILED' ? 'boom' : null,
      acked: false,
      canceled: true,
      received_at: 1,
      updated_at: Date.now(),
    });
    fs.writeFileSync(
      path.join(dir, 'journal.json'),
      JSON.stringify({ v: 1, jobs: [entry('done', 'COMPLETED'), entry('failed', 'FAILED'), entry('aborted', 'DOWNLOADING'), entry('early', null)] }),
    );
    const j = await Journal.open(dir, log, { keepTombstones: 0 });
    expect(j.reportable().map((e) => e.job_id)).toEqual(['done', 'failed']);
    expect(j.unfinished()).toEqual([]);
    j.prune();
    expect(j.all().map((e) => e.job_id)).toEqual(['done', 'failed']);
    j.update('done', { acked: true });
    expect(j.reportable().map((e) => e.job_id)).toEqual(['failed']);
  });

  test('keeps only the newest tombstones and stops reporting finished jobs never acked', async () => {
    let t = 0;
    const j = await Journal.open(dir, log, { keepTombstones: 3, unackedRetentionMs: 1000, now: () => t });
    for (let i = 0; i < 6; i++) {
      t = i;
      j.accept(msg(`old${i}`));
      j.update(`old${i}`, { status: 'COMPLETED', acked: true });
    }
    j.accept(msg('unacked'));
    j.update('unacked', { status: 'FAILED', error_msg: 'x' });
    j.accept(msg('running'));
    t = 5000;
    await j.flush();
    const again = await Journal.open(dir, log);
    expect(again.all().map((e) => e.job_id).sort()).toEqual(['old4', 'old5', 'running', 'unacked']);
    expect(again.get('unacked')).toMatchObject({ acked: true });
    expect(again.reportable().map((e) => e.job_id)).toEqual(['running']);
  });

  test('concurrent flushes all resolve with the last state written', async () => {
    const j = await Journal.open(dir, log);
    const flushes: Promise<void>[] = [];
    for (let i = 0; i < 20; i++) {
      j.accept(msg(`j${i}`));
      flushes.push(j.flush());
    }
    await Promise.all(flushes);
    expect((await Journal.open(dir, log)).all()).toHaveLength(20);
  });

  test('a corrupt journal is moved aside and the daemon starts empty', async () => {
    fs.writeFileSync(path.join(dir, 'journal.json'), '{"v":1,"jobs":[{"job_id":');
    const j = await Journal.open(dir, log);
    expect(j.all()).toEqual([]);
    expect(fs.readdirSync(dir).some((f) => f.startsWith('journal.json.corrupt-'))).toBe(true);
  });
});
