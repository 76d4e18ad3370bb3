// The stack scripts themselves, on a second stack with its own ports and data folder (the shared one keeps
// serving the other tests): a second `up` is a no-op, Temporal Web answers, `down` leaves no process behind.
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
  MONGO_PORT: '47017',
  S3_PORT: '37070',
  MQTT_PORT: '31883',
  MQTT_CLOUD_PORT: '31884',
  FLEET_SSH_BASE_PORT: '32201',
};
const stack = (cmd: string) =>
  run(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'infra/stack-cli.ts'), cmd], { env, cwd: repoRoot, timeout: 120000 });

/** Live (non-zombie) processes whose command line mentions this stack's data folder. */
function processesOfThisStack(): string[] {
  const out: string[] = [];
  for (const pid of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      if (/\) Z /.test(stat)) continue;
      const cl = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
      if (cl.includes(dataDir)) out.push(`${pid} ${cl}`);
    } catch {
      /* exited meanwhile */
    }
  }
  return out;
}

afterAll(async () => {
  await stack('down').catch(() => undefined);
  fs.rmSync(dataDir, { recursive: true, force: true });
});

test('up twice is a no-op, Temporal Web answers, down ends exactly what up started', async () => {
  const first = await stack('up');
  expect(first.stdout).toMatch(/started temporal/);
  expect(first.stdout).toMatch(/2 simulated robots .*2 started now/);
  const pidsAfterFirst = (await stack('status')).stdout;

  const second = await stack('up');
  expect(second.stdout).not.toMatch(/\] started /);
  expect(second.stdout).toMatch(/running temporal/);
  expect(second.stdout).toMatch(/0 started now/);
  expect((await stack('status')).stdout).toBe(pidsAfterFirst);

  const ui = await fetch('http://127.0.0.1:38233/api/v1/namespaces');
  expect(ui.status).toBe(200);
  expect(JSON.stringify(await ui.json())).toContain('"fleet"');

  // temporal, ferretdb, versitygw, mosquitto and two sshd: all carry the data folder in their command line.
  expect(processesOfThisStack().length).toBe(6);
  const down = await stack('down');
  expect(down.stdout).toMatch(/stopped temporal/);
  expect(processesOfThisStack()).toEqual([]);
});
