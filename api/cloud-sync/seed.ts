// Seeding of the online app's cloud-sync data from a data-set file (infra/seed/demo.json): a center with its own
// key, its robots, the catalogue with static images, version maps, and RFs (deterministic bytes, stored in S3
// with their sha256) in each robot's perfect state. Idempotent: what exists with the same content is kept; the
// center keeps its key, so a JWT issued earlier stays valid.
import { HeadObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { z } from 'zod';
import type { Config } from '../../common/config';
import { chunks, type Db } from '../../common/db';
import { streamToS3 } from '../ota/s3';
import { newCenterKey, signCenterToken, type CenterKey } from './auth';

export const RF_BUCKET = 'robot-files';

const size = z.string().regex(/^\d+(KiB|MiB|GiB)?$/).transform((s) => {
  const m = /^(\d+)(KiB|MiB|GiB)?$/.exec(s)!;
  const units: Record<string, number> = { KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 };
  return Number(m[1]) * (units[m[2] ?? ''] ?? 1);
});
const catalogueItem = z.object({ id: z.string().min(1), image: z.string().optional(), data: z.record(z.string(), z.unknown()) });
const rfItem = z.object({ name: z.string().regex(/^[A-Za-z0-9._-]+$/), size, path: z.string().min(1) });
export const dataSetSchema = z.object({
  center: z.object({ id: z.string().min(1), name: z.string().min(1) }),
  version_maps: z.array(z.object({ version: z.string(), compatible: z.boolean(), migrations: z.array(z.string()) })),
  categories: z.array(catalogueItem),
  skills: z.array(catalogueItem),
  actions: z.array(catalogueItem),
  rfs: z.array(rfItem),
  large_rfs: z.array(rfItem).default([]),
});
export type DataSet = z.infer<typeof dataSetSchema>;
export type RfSpec = z.infer<typeof rfItem>;

export const readDataSet = (file: string): DataSet => dataSetSchema.parse(JSON.parse(fs.readFileSync(file, 'utf8')));

/** Deterministic, incompressible bytes for an RF: AES-256-CTR keystream keyed by the RF's name. */
export function rfContent(name: string, bytes: number): Readable {
  const cipher = crypto.createCipheriv('aes-256-ctr', crypto.createHash('sha256').update(name).digest(), Buffer.alloc(16));
  const block = Buffer.alloc(1024 * 1024);
  let left = bytes;
  return new Readable({
    read() {
      if (left <= 0) return void this.push(null);
      const n = Math.min(left, block.length);
      left -= n;
      this.push(cipher.update(block.subarray(0, n)));
    },
  });
}

/** A small SVG per image name: real image files the offline app can show. */
const imageSvg = (name: string): Buffer => {
  const hue = crypto.createHash('sha256').update(name).digest()[0] * 1.4;
  const label = name.replace(/\.svg$/, '').replace(/[^a-z0-9 -]/gi, ' ');
  return Buffer.from(
    `<svg xmlns="http://www.w3.org/2000/svg" width="256" height="256"><rect width="256" height="256" rx="32" fill="hsl(${hue.toFixed(0)},60%,70%)"/>` +
      `<text x="128" y="136" font-size="20" text-anchor="middle" font-family="sans-serif">${label}</text></svg>\n`,
  );
};

async function objectMatches(s3: S3Client, key: string, bytes: number): Promise<boolean> {
  return s3.send(new HeadObjectCommand({ Bucket: RF_BUCKET, Key: key })).then((h) => h.ContentLength === bytes, () => false);
}

async function storeObject(s3: S3Client, key: string, body: () => Readable, bytes: number, known: { sha256: string; size: number } | null): Promise<{ sha256: string; size: number }> {
  if (known && known.size === bytes && (await objectMatches(s3, key, bytes))) return known;
  return streamToS3(s3, { bucket: RF_BUCKET, key }, body(), { partSizeBytes: 16 * 1024 * 1024, queueSize: 2, signal: new AbortController().signal });
}

export interface SeedRobot {
  id: string;
  rfRoot: string;
}

export interface SeedResult {
  centerId: string;
  /** A fresh JWT for the center (signed with its key, valid `tokenTtl`). */
  token: string;
  robots: number;
  rfs: number;
  rfBytes: number;
  images: number;
}

/** Where a center's private key lives on the seeding machine (the cloud's DB holds only the public key). */
export const centerKeyFile = (cfg: Config, centerId: string) => path.join(cfg.dataDir, 'centers', `${centerId}.jwk.json`);

async function centerKey(cfg: Config, centerId: string): Promise<CenterKey> {
  const file = centerKeyFile(cfg, centerId);
  if (fs.existsSync(file)) return JSON.parse(fs.readFileSync(file, 'utf8')) as CenterKey;
  const key = await newCenterKey();
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, JSON.stringify(key), { mode: 0o600 });
  return key;
}

export async function seedCloudSync(
  cfg: Config,
  db: Pick<Db, 'cloudSync' | 'robots'>,
  s3: S3Client,
  o: { dataSet: DataSet; centerId?: string; robots: SeedRobot[]; large?: boolean; tokenTtl?: string },
): Promise<SeedResult> {
  const m = db.cloudSync;
  const ds = o.dataSet;
  const centerId = o.centerId ?? ds.center.id;
  const key = await centerKey(cfg, centerId);
  await m.Center.updateOne(
    { _id: centerId },
    { $set: { name: ds.center.name, public_jwk: key.publicJwk, alg: key.alg }, $setOnInsert: { last_sync_at: null } },
    { upsert: true },
  );
  for (const part of chunks(o.robots)) {
    await db.robots.bulkWrite(part.map((r) => ({ updateOne: { filter: { _id: r.id }, update: { $set: { center_id: centerId, rf_root: r.rfRoot } }, upsert: true } })));
  }
  for (const v of ds.version_maps) {
    await m.VersionMap.updateOne({ _id: v.version }, { $set: { compatible: v.compatible, migrations: v.migrations } }, { upsert: true });
  }
  const now = new Date();
  for (const [coll, items] of [['categories', ds.categories], ['skills', ds.skills], ['actions', ds.actions]] as const) {
    for (const part of chunks(items)) {
      await m[coll].bulkWrite(
        part.map((i) => ({ updateOne: { filter: { _id: i.id }, update: { $set: { image: i.image ?? null, data: i.data }, $setOnInsert: { updated_at: now } }, upsert: true } })),
      );
    }
  }
  const images = [...new Set([...ds.categories, ...ds.actions].flatMap((i) => (i.image ? [i.image] : [])))];
  for (const name of images) {
    const body = imageSvg(name);
    const known = await m.StaticImage.findById(name).lean();
    const stored = await storeObject(s3, `images/${name}`, () => Readable.from([body]), body.length, known);
    await m.StaticImage.updateOne({ _id: name }, { $set: { s3_bucket: RF_BUCKET, s3_object_name: `images/${name}`, ...stored } }, { upsert: true });
  }
  const rfs = [...ds.rfs, ...(o.large ? ds.large_rfs : [])];
  let rfBytes = 0;
  for (const rf of rfs) {
    const known = await m.Rf.findById(rf.name).lean();
    const stored = await storeObject(s3, `rf/${rf.name}`, () => rfContent(rf.name, rf.size), rf.size, known);
    await m.Rf.updateOne({ _id: rf.name }, { $set: { s3_bucket: RF_BUCKET, s3_object_name: `rf/${rf.name}`, ...stored } }, { upsert: true });
    rfBytes += stored.size;
    const rfDoc = { sha256: stored.sha256, size: stored.size };
    for (const part of chunks(o.robots)) {
      await m.PerfectState.bulkWrite(
        part.map((r) => ({
          updateOne: {
            filter: { _id: `${r.id}|${rf.path}` },
            update: { $set: { robot_id: r.id, path: rf.path, url: `rf/${rf.name}`, ...rfDoc } },
            upsert: true,
          },
        })),
      );
    }
  }
  const token = await signCenterToken(key, { centerId, issuer: cfg.api.jwtIssuer, ttl: o.tokenTtl ?? '365d' });
  return { centerId, token, robots: o.robots.length, rfs: rfs.length, rfBytes, images: images.length };
}

/** Records the center's JWT in <dataDir>/local.env (where the local config reads CENTER_JWT), replacing an older one. */
export function writeLocalCenterJwt(cfg: Config, token: string): void {
  const file = path.join(cfg.dataDir, 'local.env');
  const lines = fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').filter((l) => l && !l.startsWith('CENTER_JWT=')) : [];
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, [...lines, `CENTER_JWT=${token}`, ''].join('\n'), { mode: 0o600 });
  fs.renameSync(tmp, file);
}
