// The robot upload engine against a real sshd: a robot sync that overlaps an OTA install of the same path never
// leaves a mixed file (each writes its own part and renames it whole; the later rename wins), and a file that
// cannot be written fails alone while the others of the session are installed.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { connectRobot, sftp } from '../../activities/ssh/connect';
import { ensureRemoteDirs, flushRemoteFs, uploadFiles, uploadPartPath, type UploadItem } from '../../activities/ssh/sftp-upload';
import { installPart } from '../../daemon/install';
import { robotDirectoryFromFleet } from '../../common/robot-directory';
import { cfg, eventually, fleet, runTs, sha256File, testRobots, uniqueId } from '../helpers';

const work = path.join(cfg.dataDir, 'upload-engine-test');

function localFile(name: string, bytes: Buffer): UploadItem & { sha256: string } {
  fs.mkdirSync(work, { recursive: true });
  const localPath = path.join(work, name);
  fs.writeFileSync(localPath, bytes);
  return { localPath, remotePath: '', size: bytes.length, sha256: crypto.createHash('sha256').update(bytes).digest('hex') };
}

test('robot sync and an OTA install of the same path overlap: the target is one whole version, the later one', async () => {
  const robot = testRobots()[0];
  const target = path.join(robot.root, 'overlap', uniqueId('rf'), 'model.bin');
  const ours = { ...localFile(uniqueId('ours'), crypto.randomBytes(6 * 1024 * 1024)), remotePath: target };
  const ota = crypto.randomBytes(5 * 1024 * 1024);
  const client = await connectRobot(robotDirectoryFromFleet(fleet()).ssh(robot.id));
  try {
    await ensureRemoteDirs(client, [target]);
    const s = await sftp(client);
    // Robot sync, slowed down so the OTA install lands in the middle of it.
    const upload = uploadFiles(s, [ours], { throttleBytesPerSec: 4 * 1024 * 1024 });
    await eventually('robot sync upload in flight', async () => fs.existsSync(uploadPartPath(target)) && fs.statSync(uploadPartPath(target)).size > 1024 * 1024);
    // The OTA daemon's install of the same path, as it does it: its own `<target>.part`, fsync, rename.
    fs.writeFileSync(`${target}.part`, ota);
    await installPart({ part: `${target}.part`, target });
    expect(sha256File(target)).toBe(crypto.createHash('sha256').update(ota).digest('hex'));
    const r = await upload;
    s.end();
    expect(r).toMatchObject({ files: 1, failed: [] });
    // Robot sync renamed last: its version, whole.
    expect(sha256File(target)).toBe(ours.sha256);
    expect(fs.readdirSync(path.dirname(target))).toEqual(['model.bin']);
  } finally {
    client.end();
  }
});

test('many small files in one session: all installed after one flush; a file that cannot be written fails alone', async () => {
  const robot = testRobots()[0];
  const dir = path.join(robot.root, 'engine', uniqueId('many'));
  const items = Array.from({ length: 200 }, (_, i) => ({ ...localFile(uniqueId(`s${i}`), crypto.randomBytes(4096 + i)), remotePath: path.join(dir, `d${i % 7}`, `f${i}.bin`) }));
  // A directory where a file should go: that one upload fails, the session and the other files do not.
  const blocked = items[17];
  fs.mkdirSync(uploadPartPath(blocked.remotePath), { recursive: true });
  const client = await connectRobot(robotDirectoryFromFleet(fleet()).ssh(robot.id));
  try {
    await ensureRemoteDirs(client, items.map((i) => i.remotePath));
    let flushes = 0;
    const s = await sftp(client);
    const r = await uploadFiles(s, items, { flush: async () => { flushes++; await flushRemoteFs(client, dir); } });
    s.end();
    expect(flushes).toBe(1);
    expect(r.files).toBe(199);
    expect(r.failed).toHaveLength(1);
    expect(r.failed[0].remotePath).toBe(blocked.remotePath);
    expect(r.bytesInstalled).toBe(items.filter((i) => i !== blocked).reduce((n, i) => n + i.size, 0));
    for (const i of items) if (i !== blocked) expect(sha256File(i.remotePath)).toBe(i.sha256);
    expect(fs.existsSync(blocked.remotePath)).toBe(false);
  } finally {
    client.end();
  }
});

test('a process killed between the .part writes and the renames leaves no partial file at any target; the next run completes', async () => {
  const robot = testRobots()[1];
  const dir = path.join(robot.root, 'engine', uniqueId('crash'));
  const items = Array.from({ length: 60 }, (_, i) => ({ ...localFile(uniqueId(`k${i}`), crypto.randomBytes(6000 + i)), remotePath: path.join(dir, `d${i % 4}`, `f${i}.bin`) }));
  // One target already holds an older version: it must stay whole until the new one is renamed onto it.
  const old = crypto.randomBytes(3000);
  fs.mkdirSync(path.dirname(items[0].remotePath), { recursive: true });
  fs.writeFileSync(items[0].remotePath, old);
  const list = path.join(work, `${uniqueId('items')}.json`);
  fs.writeFileSync(list, JSON.stringify(items));

  // A real process runs the engine; SIGKILL once every part is written and before any rename.
  const child = runTs('test/robot-sync/engine-child.ts', {}, [robot.id, list]);
  await child.waitForOutput('parts written', 60000);
  await child.kill('SIGKILL');
  for (const i of items.slice(1)) {
    expect(fs.existsSync(i.remotePath)).toBe(false);
    expect(fs.statSync(uploadPartPath(i.remotePath)).size).toBe(i.size);
  }
  expect(fs.readFileSync(items[0].remotePath).equals(old)).toBe(true);

  // The next run sends everything again over the leftover parts and installs every file whole.
  const client = await connectRobot(robotDirectoryFromFleet(fleet()).ssh(robot.id));
  try {
    const s = await sftp(client);
    const r = await uploadFiles(s, items, { flush: () => flushRemoteFs(client, dir) });
    s.end();
    expect(r).toMatchObject({ files: items.length, failed: [] });
    for (const i of items) expect(sha256File(i.remotePath)).toBe(i.sha256);
    const left = fs.readdirSync(dir, { recursive: true }).map(String).filter((f) => f.endsWith('.part'));
    expect(left).toEqual([]);
  } finally {
    client.end();
  }
});

test('a cached RF whose size no longer matches its record is refused: nothing at its target, no part left', async () => {
  const robot = testRobots()[0];
  const dir = path.join(robot.root, 'engine', uniqueId('size'));
  const client = await connectRobot(robotDirectoryFromFleet(fleet()).ssh(robot.id));
  try {
    for (const [name, actual, recorded, message] of [
      ['grown', 9000, 8192, /larger than its recorded size 8192/],
      ['shrunk', 5000, 8192, /5000 bytes, not its recorded size 8192/],
    ] as const) {
      const item = { ...localFile(uniqueId(name), crypto.randomBytes(actual)), remotePath: path.join(dir, `${name}.bin`), size: recorded };
      await ensureRemoteDirs(client, [item.remotePath]);
      const s = await sftp(client);
      await expect(uploadFiles(s, [item])).rejects.toThrow(message);
      s.end();
      expect(fs.existsSync(item.remotePath)).toBe(false);
      expect(fs.existsSync(uploadPartPath(item.remotePath))).toBe(false); // nor a part that no rename takes
    }
  } finally {
    client.end();
  }
});
