// The start/stop commands themselves, on a second system with its own ports and data folder (the shared stack
// keeps serving the other tests): `npm start` (infra/start.ts: servers, robots, worker, bridge, API, daemons)
// run twice is a no-op the second time, Temporal Web answers, `npm stop` leaves no process behind.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { repoRoot } from '../../common/config';

const run = promisify(execFile);
const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-lifecycle-'));
const env = {
  ...process.env,
  FLEET_DATA_DIR: dataDir,
  FLEET_ROBOTS: '2',
  TEMPORAL_PORT: '37233',
  TEMPORAL_UI_PORT: '38233',
  MONGO_PORT: '57017',
  S3_PORT: '37070',
  MQTT_PORT: '31883',
  MQTT_CLOUD_PORT: '31884',
  FLEET_SSH_BASE_PORT: '32201',
  API_PORT: '39005',
};
const tsx = (file: string, ...args: string[]) =>
  run(process.execPath, ['--import', 'tsx', path.join(repoRoot, file), ...args], { env, cwd: repoRoot, timeout: 180000 });
const start = () => tsx('infra/start.ts');
const stop = () => tsx('infra/stop.ts');
const status = () => tsx('infra/stack-cli.ts', 'status');

/** Live (non-zombie) processes of this system: the data folder is in their command line or environment. */
function processesOfThisSystem(): string[] {
  const out: string[] = [];
  for (const pid of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      if (/\) Z /.test(stat) || Number(pid) === process.pid) continue;
      const cl = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
      const environ = fs.readFileSync(`/proc/${pid}/environ`, 'utf8');
      if (cl.includes(dataDir) || environ.includes(`FLEET_DATA_DIR=${dataDir}\0`)) out.push(`${pid} ${cl}`);
    } catch {
      /* exited meanwhile */
    }
  }
  return out;
}

afterAll(async () => {
  await stop().catch(() => undefined);
  fs.rmSync(dataDir, { recursive: true, force: true });
});

test('start twice is a no-op, Temporal Web and the API answer, stop ends exactly what start started', async () => {
  const first = await start();
  expect(first.stdout).toMatch(/started temporal/);
  expect(first.stdout).toMatch(/2 simulated robots .*2 started now/);
  for (const app of ['worker', 'mqtt-bridge', 'api', 'daemon-robot01', 'daemon-robot02']) expect(first.stdout).toContain(`started ${app} `);
  const pidsAfterFirst = (await status()).stdout;

  const second = await start();
  expect(second.stdout).not.toMatch(/\] started /);
  expect(second.stdout).toMatch(/running temporal/);
  expect(second.stdout).toMatch(/running worker/);
  expect(second.stdout).toMatch(/0 started now/);
  expect((await status()).stdout).toBe(pidsAfterFirst);

  const ui = await fetch('http://127.0.0.1:38233/api/v1/namespaces');
  expect(ui.status).toBe(200);
  expect(JSON.stringify(await ui.json())).toContain('"fleet"');
  const health = await fetch('http://127.0.0.1:39005/api/v1/health');
  expect(health.status).toBe(200);

  // Servers (temporal, ferretdb, versitygw, mosquitto), two sshd, worker, bridge, API and two daemons; tsx
  // may add helper processes, so count at least these.
  expect(processesOfThisSystem().length).toBeGreaterThanOrEqual(11);
  const down = await stop();
  expect(down.stdout).toMatch(/stopped temporal/);
  expect(down.stdout).toMatch(/stopped worker/);
  expect(processesOfThisSystem()).toEqual([]);
});
