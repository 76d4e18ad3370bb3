// The process manager refuses to start a server whose port another process holds: otherwise the readiness
// check would be answered by that other process and the stack would believe a server it never started.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { ensureProcess, runningPid } from '../../infra/proc';

test('a start on a port that is already taken fails with a clear message and starts nothing', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'proc-'));
  const paths = { runDir: path.join(dir, 'run'), logDir: path.join(dir, 'logs') };
  const squatter = net.createServer().listen(0, '127.0.0.1');
  await new Promise((r) => squatter.once('listening', r));
  const port = (squatter.address() as net.AddressInfo).port;
  try {
    await expect(
      ensureProcess(paths, { name: 'sleeper', command: '/bin/sleep', args: ['30'], ports: [port], ready: async () => true }),
    ).rejects.toThrow(new RegExp(`port ${port} is already in use`));
    expect(runningPid(paths, 'sleeper')).toBeNull();
  } finally {
    squatter.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
