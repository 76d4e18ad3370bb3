// `npm start`: the whole system locally: servers, simulated fleet, and the project's own processes, all in the
// background. Idempotent: a second run finds everything running and changes nothing.
import { loadConfig } from '../common/config';
import { seedOfflineRobots } from '../api/offline/seed';
import { connectOfflineDb } from '../common/db';
import { appSpecs } from './apps';
import { seedDemoCenter } from './seed';
import { ensureProcess } from './proc';
import { stackPaths, stackUp } from './stack';

async function main(): Promise<void> {
  const cfg = loadConfig();
  const log = (l: string) => console.log(`[start] ${l}`);
  const fleet = await stackUp(cfg, { log });
  const p = stackPaths(cfg);
  const offline = await connectOfflineDb(cfg);
  try {
    const added = await seedOfflineRobots(offline.models, fleet.clientKeyFile, fleet.robots.slice(0, cfg.fleet.robots));
    if (added) log(`center ${cfg.offline.centerId}: ${added} robots added to the offline app`);
  } finally {
    await offline.close();
  }
  const seeded = await seedDemoCenter(cfg, fleet);
  if (seeded) log(`center ${seeded.centerId} seeded on the cloud: ${seeded.robots} robots, ${seeded.rfs} RFs, ${seeded.images} images (CENTER_JWT in local.env)`);
  for (const spec of appSpecs(cfg, fleet)) {
    const r = await ensureProcess(p, spec);
    log(`${r.started ? 'started' : 'running'} ${spec.name} (pid ${r.pid})`);
  }
  console.log(`
Fleet sync is up.
  OTA API        ${cfg.api.publicUrl}/api/v1/docs   (token: npm run token)
  Temporal Web   http://127.0.0.1:${cfg.temporal.uiPort}/namespaces/${cfg.temporal.namespace}/workflows
  Temporal       ${cfg.temporal.address} (namespace ${cfg.temporal.namespace}, task queue ${cfg.temporal.taskQueue})
  MongoDB        ${cfg.mongo.url} (FerretDB)   S3 ${cfg.s3.endpoint} (versitygw)
  MQTT           robots ${cfg.mqtt.url}, cloud ${cfg.mqtt.cloudUrl}
  Offline app    http://${cfg.offline.api.host}:${cfg.offline.api.port}/api/health   (center ${cfg.offline.centerId}; sync: POST /api/sync)
  Robots         ${fleet.robots.map((r) => `${r.id}:${r.ssh.port}`).join(' ')}
  Logs           ${p.logDir}
  Stop           npm stop`);
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e instanceof Error ? e.message : e);
    process.exit(1);
  },
);
