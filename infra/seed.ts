// `npm run seed -- [--data FILE] [--large]`: loads a cloud-sync data set (default infra/seed/demo.json) for the
// demo center (CENTER_ID) and the simulated fleet's robots, and writes the center's JWT into <dataDir>/local.env
// so the local offline app uses it. `--large` adds the data set's large RFs (hundreds of MiB).
// `npm start` runs seedDemoCenter once (when the center or its JWT is missing).
import path from 'node:path';
import { parseArgs } from 'node:util';
import { createS3Client } from '../activities/s3/client';
import { demoRfRoot } from '../api/offline/seed';
import { readDataSet, seedCloudSync, writeLocalCenterJwt, type SeedResult } from '../api/cloud-sync/seed';
import { loadConfig, repoRoot, type Config } from '../common/config';
import { connectDb } from '../common/db';
import type { FleetManifest } from './fleet';

export const DEMO_DATA_SET = path.join(repoRoot, 'infra', 'seed', 'demo.json');

export async function seedDemoCenter(cfg: Config, fleet: FleetManifest, o: { dataFile?: string; large?: boolean; force?: boolean } = {}): Promise<SeedResult | null> {
  const db = await connectDb(cfg);
  const s3 = createS3Client(cfg);
  try {
    if (!o.force && cfg.offline.centerJwt && (await db.cloudSync.Center.exists({ _id: cfg.offline.centerId }))) return null;
    const robots = fleet.robots.slice(0, cfg.fleet.robots).map((r) => ({ id: r.id, rfRoot: demoRfRoot(r) }));
    const result = await seedCloudSync(cfg, db, s3, { dataSet: readDataSet(o.dataFile ?? DEMO_DATA_SET), centerId: cfg.offline.centerId, robots, large: o.large });
    writeLocalCenterJwt(cfg, result.token);
    return result;
  } finally {
    s3.destroy();
    await db.close();
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { data: { type: 'string' }, large: { type: 'boolean', default: false } } });
  const cfg = loadConfig();
  const { readFleet } = await import('./fleet');
  const r = await seedDemoCenter(cfg, readFleet(cfg), { dataFile: values.data, large: values.large, force: true });
  console.log(`seeded center ${r!.centerId}: ${r!.robots} robots, ${r!.rfs} RFs (${(r!.rfBytes / 1024 ** 2).toFixed(1)} MiB), ${r!.images} images; CENTER_JWT written to ${path.join(cfg.dataDir, 'local.env')}`);
}

if (require.main === module) {
  main().then(
    () => process.exit(0),
    (e: unknown) => {
      console.error(e instanceof Error ? e.message : e);
      process.exit(1);
    },
  );
}
