// `npm start`: the whole system locally: servers, simulated fleet, and the project's own processes, all in the
// background. Idempotent: a second run finds everything running and changes nothing.
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { loadConfig, repoRoot } from '../common/config';
import { seedOfflineRobots } from '../api/offline/seed';
import { connectOfflineDb } from '../common/db';
import { appSpecs } from './apps';
import { seedDemoCenter } from './seed';
import { ensureProcess } from './proc';
import { stackPaths, stackUp } from './stack';

async function main(): Promise<void> {
  const cfg = loadConfig();
  const log = (l: string) => console.log(`[start] ${l}`);
  // The browser apps are built before the processes that serve them (a no-op when the build is current).
  execFileSync(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'ui', 'build.ts'), '--if-stale'], { cwd: repoRoot, stdio: 'inherit' });
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
  Specialist UI  http://${cfg.offline.api.host}:${cfg.offline.api.port}/   (center ${cfg.offline.centerId}: Synchronize, then Update Robots)
  Operator UI    ${cfg.api.publicUrl}/ui/   (sign in with a token: npm run -s token -- --role operator)
  OTA API        ${cfg.api.publicUrl}/api/v1/docs
  Temporal Web   ${cfg.temporal.webUrl}/namespaces/${cfg.temporal.namespace}/workflows   (center: ${cfg.offline.temporal.webUrl}/namespaces/${cfg.offline.temporal.namespace}/workflows)
  Temporal       ${cfg.temporal.address} (namespace ${cfg.temporal.namespace}, task queue ${cfg.temporal.taskQueue})
  MongoDB        ${cfg.mongo.url} (FerretDB)   S3 ${cfg.s3.endpoint} (versitygw)
  MQTT           robots ${cfg.mqtt.url}, cloud ${cfg.mqtt.cloudUrl}
  Offline API    http://${cfg.offline.api.host}:${cfg.offline.api.port}/api/health
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
