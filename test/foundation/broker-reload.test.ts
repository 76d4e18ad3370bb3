// The broker the stack runs survives a configuration reload while sessions restored from persistence wait for their
// clients. That reload is what `npm run robot -- add/remove` does (SIGHUP), and after any broker restart some
// robots are offline. Every stock Mosquitto 2.0.x up to 2.0.22 re-adds each such session to its expiry list on a
// reload without taking it off first, and later reads the freed session: under valgrind, Debian's 2.0.11 and
// 2.0.21 report 57 and 102 invalid accesses in this very sequence, and without valgrind the broker crashed or
// dropped another client in about one CI run of three. infra/install.sh builds it with
// infra/tools/mosquitto/*.patch; valgrind makes any use of freed memory a failing exit code.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { loadConfig, type Config } from '../../common/config';
import { brokerRobotPasswordFile, upsertBrokerUsers } from '../../infra/robots';
import { prepareBroker, tools } from '../../infra/stack';
import { eventually } from '../helpers';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'broker-reload-'));
let broker: { proc: ChildProcess; exit: Promise<number | null> } | undefined;

afterAll(async () => {
  broker?.proc.kill('SIGKILL');
  fs.rmSync(work, { recursive: true, force: true });
});

async function freePort(): Promise<number> {
  const srv = net.createServer().listen(0, '127.0.0.1');
  await new Promise((r) => srv.once('listening', r));
  const { port } = srv.address() as net.AddressInfo;
  await new Promise((r) => srv.close(r));
  return port;
}

const portOpen = (port: number) =>
  new Promise<boolean>((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });

/** Starts the stack's broker binary under valgrind (exit code 99 on any invalid memory access). */
async function startBroker(cfg: Config, run: number): Promise<void> {
  const proc = spawn(
    'valgrind',
    ['--error-exitcode=99', `--log-file=${path.join(work, `valgrind-${run}.log`)}`, tools(cfg).mosquitto, '-c', path.join(work, 'mosquitto', 'mosquitto.conf')],
    { stdio: 'ignore' },
  );
  const exit = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  broker = { proc, exit };
  await eventually('the broker to listen', () => portOpen(cfg.mqtt.port), 30000);
}

/** Stops the broker as a service manager would and returns its exit code (valgrind's 99 on memory errors). */
async function stopBroker(): Promise<number | null> {
  broker!.proc.kill('SIGTERM');
  return broker!.exit;
}

const robot = (cfg: Config, user: string, session?: { expiry: number }): Promise<MqttClient> =>
  mqtt.connectAsync(cfg.mqtt.url, {
    username: user,
    clientId: user,
    password: `pw-${user}`,
    protocolVersion: 5,
    reconnectPeriod: 0,
    ...(session ? { clean: false, properties: { sessionExpiryInterval: session.expiry } } : {}),
  });

/** Connects with a persistent session; resolves with the client and whether the broker still held that session. */
const resume = (cfg: Config, user: string, expiry: number) =>
  new Promise<{ client: MqttClient; sessionPresent: boolean }>((resolve, reject) => {
    const client = mqtt.connect(cfg.mqtt.url, {
      username: user,
      clientId: user,
      password: `pw-${user}`,
      protocolVersion: 5,
      reconnectPeriod: 0,
      clean: false,
      properties: { sessionExpiryInterval: expiry },
    });
    client.once('connect', (packet) => resolve({ client, sessionPresent: packet.sessionPresent }));
    client.once('error', reject);
  });

test('reloads after a restart, with restored sessions waiting, neither corrupt the broker nor drop a client', async () => {
  const base = loadConfig();
  const [port, cloudPort] = [await freePort(), await freePort()];
  const cfg: Config = {
    ...base,
    dataDir: work,
    mqtt: { ...base.mqtt, port, cloudPort, url: `mqtt://127.0.0.1:${port}`, cloudUrl: `mqtt://127.0.0.1:${cloudPort}` },
  };
  await prepareBroker(cfg);
  const passwords = brokerRobotPasswordFile(cfg);
  upsertBrokerUsers(passwords, ['r-back', 'r-away', 'r-online'].map((u) => [u, `pw-${u}`] as const));

  await startBroker(cfg, 1);
  // Two offline robots with sessions: one comes back after the reloads, the other stays away. (Mosquitto 2.0.11
  // does not expire a session restored from persistence until its client has connected again: upstream's own
  // FIXME in persist_read.c. On the stock broker the reload's spurious disconnect put both on the expiry list.)
  for (const [user, expiry] of [['r-back', 600], ['r-away', 4]] as const) {
    const c = await robot(cfg, user, { expiry });
    await c.subscribeAsync(`ota/${user}/#`, { qos: 1 });
    await c.endAsync();
  }
  await new Promise((r) => setTimeout(r, 1500)); // autosave_interval 1: both sessions are on disk
  broker!.proc.kill('SIGKILL');
  await broker!.exit;

  await startBroker(cfg, 2);
  const online = await robot(cfg, 'r-online');
  let onlineClosed = false;
  online.on('close', () => (onlineClosed = true));

  // `robot add` then `robot remove`: a new credential, a reload, the credential gone, another reload.
  upsertBrokerUsers(passwords, [['r-new', 'pw-r-new']]);
  broker!.proc.kill('SIGHUP');
  await eventually('the new credential to be accepted', async () => {
    const c = await robot(cfg, 'r-new');
    await c.endAsync();
    return true;
  });
  broker!.proc.kill('SIGHUP');
  await new Promise((r) => setTimeout(r, 1000));

  // The robot whose session was restored takes it over (its old context is freed), leaves and comes back.
  for (let i = 0; i < 2; i++) {
    const back = await resume(cfg, 'r-back', 600);
    expect(back.sessionPresent).toBe(true); // the restored session, kept through the restart and the reloads
    await back.client.endAsync();
  }
  // Past the other's expiry interval, while the broker runs: the stock broker's expiry check read freed memory.
  await new Promise((r) => setTimeout(r, 5000));

  expect(onlineClosed).toBe(false);
  expect(online.connected).toBe(true);
  await online.endAsync();
  const code = await stopBroker();
  const report = fs.readFileSync(path.join(work, 'valgrind-2.log'), 'utf8');
  expect(report.match(/ERROR SUMMARY: \d+ errors/)?.[0]).toBe('ERROR SUMMARY: 0 errors');
  expect(code).toBe(0);
}, 120000);
