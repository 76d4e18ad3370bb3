// The OpenSSH bulk transport (activities/ssh/openssh-put.ts) against real sshd robots: the ssh child SIGKILLed
// while bytes flow leaves no file at the target and the next attempt sends only the rest; a host key other than
// the verified one is refused before anything is written; a password robot is reached with the password in the
// child's environment only (never on a command line).
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Client, SFTPWrapper } from 'ssh2';
import { connectRobot, connectWithHostKey, sftp, verifiedHostKey, type RobotSshTarget } from '../../activities/ssh/connect';
import { DD_BLOCK, opensshPut, opensshUnavailable, splitRanges, uploadLargeWithOpenssh } from '../../activities/ssh/openssh-put';
import { ensureRemoteDirs, uploadPartPath, type ResumePoint, type UploadItem } from '../../activities/ssh/sftp-upload';
import { robotDirectoryFromFleet } from '../../common/robot-directory';
import { cfg, eventually, fleet, sha256File, testRobots, uniqueId } from '../helpers';
import { startPasswordRobot } from './password-robot';

const work = path.join(cfg.dataDir, 'openssh-put-test');

function localFile(size: number): UploadItem {
  fs.mkdirSync(work, { recursive: true });
  const bytes = crypto.randomBytes(size);
  const localPath = path.join(work, uniqueId('rf'));
  fs.writeFileSync(localPath, bytes);
  return { localPath, remotePath: '', size, sha256: crypto.createHash('sha256').update(bytes).digest('hex') };
}

async function session(target: RobotSshTarget): Promise<{ client: Client; s: SFTPWrapper }> {
  const client = await connectRobot(target);
  return { client, s: await sftp(client) };
}

test('OpenSSH ssh and setpriv are installed (else robot sync falls back to ssh2)', () => {
  expect(opensshUnavailable()).toBeNull();
});

test('a stream SIGKILLed while both ranges are in flight: nothing at the target, the retry resumes each range from its own point and sends only the rest', async () => {
  const robot = testRobots()[3];
  const target = robotDirectoryFromFleet(fleet()).ssh(robot.id);
  const item = { ...localFile(32 * 1024 * 1024), remotePath: path.join(robot.root, 'openssh', uniqueId('big'), 'model.bin') };
  const ranges = splitRanges(item.size, 2);
  expect(ranges).toEqual([{ from: 0, to: 16 * 1024 * 1024 }, { from: 16 * 1024 * 1024, to: item.size }]);
  const { client, s } = await session(target);
  try {
    await ensureRemoteDirs(client, [item.remotePath]);
    const pids: number[] = [];
    let point: ResumePoint | null = null;
    // The part is fsynced over the ssh2 session while dd writes it (counted here on the real session).
    let fsyncs = 0;
    const fsync = s.ext_openssh_fsync.bind(s);
    s.ext_openssh_fsync = (h, cb) => {
      fsyncs++;
      return fsync(h, cb);
    };
    // 2 MiB/s per stream (8 s a range): the test kills a child while both are writing.
    const first = uploadLargeWithOpenssh(s, item, {
      target,
      hostKey: verifiedHostKey(client)!,
      streams: 2,
      limitKbitPerSec: 16 * 1024,
      flushEveryBytes: 1024 * 1024,
      onSpawn: (p, range) => (pids[range] = p),
      onProgress: (p) => (point = structuredClone(p.resume)),
    });
    first.catch(() => undefined);
    const written = (i: number) => (point?.ranges?.[i].at ?? 0) - ranges[i].from;
    await eventually('both ranges written in part', async () => written(0) > 2 * 1024 * 1024 && written(1) > 2 * 1024 * 1024, 30000);
    expect(written(0)).toBeLessThan(16 * 1024 * 1024);
    expect(written(1)).toBeLessThan(16 * 1024 * 1024);
    // The robot holds what dd reported, in each range: the part's bytes there are the file's.
    const src = fs.readFileSync(item.localPath);
    const held = fs.readFileSync(uploadPartPath(item.remotePath));
    for (const r of ranges) expect(held.subarray(r.from, r.from + 2 * 1024 * 1024).equals(src.subarray(r.from, r.from + 2 * 1024 * 1024))).toBe(true);
    process.kill(pids[0], 'SIGKILL');
    await expect(first).rejects.toThrow(/ssh upload to robot .* failed \(SIGKILL\)/);
    // The other stream was stopped with it, and the robot's dds lost their input: the part stops changing.
    for (const pid of pids) expect(execFileSync('ps', ['-eo', 'pid=']).toString().split('\n').map(Number)).not.toContain(pid);
    await new Promise((r) => setTimeout(r, 500));
    const atKill = fs.readFileSync(uploadPartPath(item.remotePath));
    await new Promise((r) => setTimeout(r, 1000));
    expect(fs.readFileSync(uploadPartPath(item.remotePath)).equals(atKill)).toBe(true);
    expect(fsyncs).toBeGreaterThan(0);
    expect(atKill.length).toBeLessThan(item.size);
    expect(fs.existsSync(item.remotePath)).toBe(false);

    // The retry starts each range from its heartbeated point, sends only the rest, renames the whole file in.
    // (dd's seek= counts its 1 MiB blocks: each point rounded down.)
    const resumed = ranges.map((r, i) => {
      const at = point!.ranges![i].at;
      return at - (at % DD_BLOCK) - r.from;
    });
    expect(resumed[0]).toBeGreaterThan(1024 * 1024);
    expect(resumed[1]).toBeGreaterThan(1024 * 1024);
    const r = await uploadLargeWithOpenssh(s, item, { target, hostKey: verifiedHostKey(client)!, streams: 2, resume: point });
    expect(r).toMatchObject({ files: 1, bytesInstalled: item.size, resumedRanges: resumed, resumedFrom: resumed[0] + resumed[1], failed: [] });
    expect(r.bytesSent).toBe(item.size - resumed[0] - resumed[1]);
    expect(sha256File(item.remotePath)).toBe(item.sha256);
    expect(fs.existsSync(uploadPartPath(item.remotePath))).toBe(false);
  } finally {
    client.end();
  }
});

test('a point from a single-stream attempt resumes the ranges it covers', async () => {
  const robot = testRobots()[3];
  const target = robotDirectoryFromFleet(fleet()).ssh(robot.id);
  const item = { ...localFile(6 * 1024 * 1024), remotePath: path.join(robot.root, 'openssh', uniqueId('single'), 'model.bin') };
  fs.mkdirSync(path.dirname(item.remotePath), { recursive: true });
  // The robot holds the first 4.5 MiB (as a one-stream attempt left it), its point says so.
  fs.writeFileSync(uploadPartPath(item.remotePath), fs.readFileSync(item.localPath).subarray(0, 4.5 * 1024 * 1024));
  const { client, s } = await session(target);
  try {
    const point: ResumePoint = { remotePath: item.remotePath, sha256: item.sha256, offset: 4.5 * 1024 * 1024 };
    const r = await uploadLargeWithOpenssh(s, item, { target, hostKey: verifiedHostKey(client)!, streams: 2, resume: point });
    // Ranges [0, 3 MiB) (all there) and [3 MiB, 6 MiB) (1.5 MiB there, 1 MiB of it counted: whole blocks).
    expect(r).toMatchObject({ files: 1, resumedRanges: [3 * 1024 * 1024, 1024 * 1024], bytesSent: 2 * 1024 * 1024 });
    expect(sha256File(item.remotePath)).toBe(item.sha256);
  } finally {
    client.end();
  }
});

test('a resume point of other content is not used: the part is replaced whole', async () => {
  const robot = testRobots()[3];
  const target = robotDirectoryFromFleet(fleet()).ssh(robot.id);
  const item = { ...localFile(3 * 1024 * 1024), remotePath: path.join(robot.root, 'openssh', uniqueId('stale'), 'model.bin') };
  fs.mkdirSync(path.dirname(item.remotePath), { recursive: true });
  fs.writeFileSync(uploadPartPath(item.remotePath), crypto.randomBytes(1024 * 1024));
  const { client, s } = await session(target);
  try {
    const stale: ResumePoint = { remotePath: item.remotePath, sha256: 'f'.repeat(64), offset: 1024 * 1024 };
    const r = await uploadLargeWithOpenssh(s, item, { target, hostKey: verifiedHostKey(client)!, resume: stale });
    expect(r).toMatchObject({ resumedFrom: 0, bytesSent: item.size, files: 1 });
    expect(sha256File(item.remotePath)).toBe(item.sha256);
  } finally {
    client.end();
  }
});

test('a host key other than the verified one: "host key mismatch", nothing written', async () => {
  const [a, b] = testRobots();
  const dir = robotDirectoryFromFleet(fleet());
  const other = await session(dir.ssh(b.id));
  try {
    const item = localFile(64 * 1024);
    const remotePath = path.join(a.root, 'openssh', uniqueId('mismatch'), 'x.bin');
    fs.mkdirSync(path.dirname(remotePath), { recursive: true });
    // Robot a, with robot b's key as the expected one.
    const put = opensshPut({ target: dir.ssh(a.id), hostKey: verifiedHostKey(other.client)!, localPath: item.localPath, remotePath, offset: 0 });
    await expect(put).rejects.toThrow(/host key mismatch/);
    expect(fs.readdirSync(path.dirname(remotePath))).toEqual([]);
  } finally {
    other.client.end();
  }
});

test('a password robot: the password reaches ssh through SSH_ASKPASS only', async () => {
  const robot = await startPasswordRobot(cfg.fleet.sshBasePort + 91);
  const passwordEnv = `OPENSSH_PUT_TEST_PW_${uniqueId('x').replace(/\W/g, '_').toUpperCase()}`;
  const env = { ...process.env, [passwordEnv]: robot.password };
  const target = { robotId: 'pw-robot', host: robot.host, port: robot.port, username: robot.username, passwordEnv, hostKeySha256: robot.hostKeySha256 };
  const { client } = await connectWithHostKey(target, robot.hostKeySha256, { env });
  try {
    const item = localFile(2 * 1024 * 1024);
    const dir = path.join(robot.root, uniqueId('pw'));
    fs.mkdirSync(dir);
    execFileSync('chown', [robot.username, dir]);
    const remotePath = path.join(dir, 'rf.bin');
    let argv = '';
    await opensshPut({
      target,
      hostKey: verifiedHostKey(client)!,
      localPath: item.localPath,
      remotePath,
      offset: 0,
      env,
      // setpriv execs ssh: read while that exec is under way, cmdline is briefly empty, so poll until it is not.
      onSpawn: (pid) => {
        const read = (): void => {
          try {
            const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
            if (cmdline.includes('HostKeyAlias')) argv = cmdline;
            else setImmediate(read);
          } catch {
            // The process is gone: argv stays as read so far.
          }
        };
        read();
      },
    });
    expect(sha256File(remotePath)).toBe(item.sha256);
    expect(argv).toContain('ssh');
    expect(argv).not.toContain(robot.password);
    // A wrong password is refused as a credential error.
    await expect(opensshPut({ target, hostKey: verifiedHostKey(client)!, localPath: item.localPath, remotePath, offset: 0, env: { ...env, [passwordEnv]: 'wrong' } })).rejects.toThrow(/authentication refused/);
  } finally {
    client.end();
    await robot.sshd.kill();
  }
});
