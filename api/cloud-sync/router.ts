// The online app's cloud-sync routes (mounted under /api/v1 by api/main.ts), authenticated by center JWTs:
//   POST /sync                 upstream sessions/children in, downstream catalogue + perfect state out
//   GET  /sync/rf/:name        an RF from S3 (Range, strong ETag)
//   GET  /sync/images/:name    a static image from S3 (Range, strong ETag)
import type { S3Client } from '@aws-sdk/client-s3';
import express, { Router } from 'express';
import type { Model } from 'mongoose';
import type { Collection } from 'mongodb';
import { z } from 'zod';
import type { Config } from '../../common/config';
import { chunks } from '../../common/db';
import type { Logger } from '../../common/logger';
import type { CatalogueDoc, CloudSyncModels, UpstreamDoc } from '../../common/models/cloud-sync';
import type { Robot } from '../../common/models/robots';
import { errorHandler, HttpError, zodDetail } from '../ota/errors';
import { streamS3Object } from '../s3-download';
import { centerAuth, requestCenter } from './auth';
import { migrationFor } from './migrations';
import { upsertNewer, type UpsertCounts, type UpsertDoc } from './upsert';

export interface CloudSyncDeps {
  cfg: Config;
  models: CloudSyncModels;
  robots: Model<Robot>;
  s3: S3Client;
  log: Logger;
}

/** Most a /sync body may weigh: 100k sessions of a few hundred bytes each fit with room to spare. */
const BODY_LIMIT = '512mb';
/** How long /sync may work without a byte on the wire: the center's client (fetch) waits 5 minutes for the head. */
const SYNC_SILENT_MS = 5 * 60_000;

const recordSchema = z.object({
  id: z.string().min(1).max(200),
  updated_at: z.iso.datetime({ offset: true }),
  data: z.record(z.string(), z.unknown()),
});
export const syncRequestSchema = z.object({
  app_version: z.string().min(1).max(64),
  sessions: z.array(recordSchema).default([]),
  children: z.array(recordSchema).default([]),
  inventories: z
    .array(z.object({ robot_id: z.string().min(1), files: z.number().int().min(0), bytes: z.number().min(0), taken_at: z.iso.datetime({ offset: true }).nullable() }))
    .default([]),
});
export type SyncRequest = z.input<typeof syncRequestSchema>;
type SyncRecordIn = z.infer<typeof recordSchema>;

export interface PerfectStateRobot {
  robot_id: string;
  rf_root: string;
  entries: { path: string; url: string; sha256: string; size: number }[];
}
export interface CatalogueOut {
  id: string;
  updated_at: string;
  image: string | null;
  data: Record<string, unknown>;
}
export interface SyncResponse {
  is_compatible: boolean;
  message: string | null;
  server_time: string;
  /** Time the server spent on this request (ms), for the benchmark and the logs. */
  server_ms: number;
  upstream: { sessions: UpsertCounts; children: UpsertCounts; migrations: string[] };
  actions: CatalogueOut[];
  categories: CatalogueOut[];
  skills: CatalogueOut[];
  static_images: { name: string; url: string; sha256: string; size: number }[];
  perfect_state: PerfectStateRobot[];
}

export const RF_PATH = '/sync/rf';
export const IMAGE_PATH = '/sync/images';
/** The short form stored in perfect states (`rf/<name>`) expanded to the download URL. */
export const expandUrl = (cfg: Config, short: string): string => `${cfg.api.publicUrl}/api/v1/sync/${short.replace(/^\/+/, '')}`;

export function cloudSyncRouter(deps: CloudSyncDeps): Router {
  const { cfg, models, log } = deps;
  const r = Router();
  const auth = centerAuth({ issuer: cfg.api.jwtIssuer, models });
  const timeout = { maxTimeMS: cfg.mongo.timeoutMs };

  const toDocs = (centerId: string, appVersion: string, migrations: string[], collection: 'sessions' | 'children', recs: SyncRecordIn[]): UpsertDoc[] => {
    const migrate = migrationFor(migrations, collection);
    return recs.map((rec) => ({
      _id: `${centerId}|${rec.id}`,
      center_id: centerId,
      updated_at: new Date(rec.updated_at),
      data: migrate(rec.data),
      app_version: appVersion,
      migrations,
    }));
  };
  const rawColl = (m: Model<UpstreamDoc>) => m.collection as unknown as Collection<UpsertDoc>;
  const catalogue = async (m: Model<CatalogueDoc>): Promise<CatalogueOut[]> =>
    (await m.find({}, null, timeout).lean()).map((d) => ({ id: d._id, updated_at: d.updated_at.toISOString(), image: d.image ?? null, data: d.data as Record<string, unknown> }));

  r.post('/sync', auth, express.json({ limit: BODY_LIMIT }), async (req, res) => {
    const started = process.hrtime.bigint();
    // The body is in; from here the connection is silent until the answer. On FerretDB a large resync's scans
    // can outlast the server's 2-minute inactivity limit (api/server.ts), which would cut a sync that succeeds.
    req.socket.setTimeout(SYNC_SILENT_MS);
    const centerId = requestCenter(res);
    const parsed = syncRequestSchema.safeParse(req.body);
    if (!parsed.success) throw new HttpError(400, zodDetail(parsed.error, 'body'));
    const body = parsed.data;
    const map = await models.VersionMap.findById(body.app_version, null, timeout).lean();
    // A version the map does not know is treated as outdated: its data is kept, nothing is sent back.
    const compatible = map?.compatible ?? false;
    const migrations = map?.migrations ?? [];
    const sessions = await upsertNewer(rawColl(models.sessions), toDocs(centerId, body.app_version, migrations, 'sessions', body.sessions), cfg.mongo.timeoutMs);
    const children = await upsertNewer(rawColl(models.children), toDocs(centerId, body.app_version, migrations, 'children', body.children), cfg.mongo.timeoutMs);
    const robots = await deps.robots.find({ center_id: centerId }, null, timeout).lean();
    const mine = new Set(robots.map((x) => x._id));
    const reportedAt = new Date();
    for (const part of chunks(body.inventories.filter((i) => mine.has(i.robot_id)))) {
      await deps.robots.bulkWrite(
        part.map((i) => ({
          updateOne: {
            filter: { _id: i.robot_id },
            update: { $set: { last_inventory: { files: i.files, bytes: i.bytes, taken_at: i.taken_at ? new Date(i.taken_at) : null, reported_at: reportedAt } } },
          },
        })),
      );
    }
    await models.Center.updateOne({ _id: centerId }, { $set: { last_sync_at: reportedAt } });

    const answer: SyncResponse = {
      is_compatible: compatible,
      message: compatible ? null : `offline app version ${body.app_version} is outdated: update the app (your data was received)`,
      server_time: reportedAt.toISOString(),
      server_ms: 0,
      upstream: { sessions, children, migrations },
      actions: [],
      categories: [],
      skills: [],
      static_images: [],
      perfect_state: [],
    };
    if (compatible) {
      [answer.actions, answer.categories, answer.skills] = await Promise.all([catalogue(models.actions), catalogue(models.categories), catalogue(models.skills)]);
      answer.static_images = (await models.StaticImage.find({}, null, timeout).lean()).map((i) => ({
        name: i._id,
        url: expandUrl(cfg, `images/${encodeURIComponent(i._id)}`),
        sha256: i.sha256,
        size: i.size,
      }));
      const entries = await models.PerfectState.find({ robot_id: { $in: [...mine] } }, null, timeout).lean();
      // A robot of the center without an RF root (only provisioned for OTA) has no perfect state to place.
      const byRobot = new Map<string, PerfectStateRobot>(
        robots.flatMap((x) => (x.rf_root ? [[x._id, { robot_id: x._id, rf_root: x.rf_root, entries: [] }] as const] : [])),
      );
      for (const e of entries) {
        const robot = byRobot.get(e.robot_id);
        if (!robot) continue;
        robot.entries.push({ path: `${robot.rf_root.replace(/\/+$/, '')}/${e.path}`, url: expandUrl(cfg, e.url), sha256: e.sha256, size: e.size });
      }
      answer.perfect_state = [...byRobot.values()];
    }
    answer.server_ms = Math.round(Number(process.hrtime.bigint() - started) / 1e5) / 10;
    log.info({ centerId, app_version: body.app_version, compatible, sessions, children, ms: answer.server_ms }, 'sync served');
    res.json(answer);
  });

  r.get(`${RF_PATH}/:name`, auth, async (req, res) => {
    const rf = await models.Rf.findById(req.params.name, null, timeout).lean();
    if (!rf) throw new HttpError(404, 'RF not found');
    log.info({ centerId: requestCenter(res), rf: rf._id, range: req.headers.range ?? null }, 'rf download');
    await streamS3Object(deps.s3, log, { bucket: rf.s3_bucket, key: rf.s3_object_name, size: rf.size, fileName: rf._id }, req, res);
  });

  r.get(`${IMAGE_PATH}/:name`, auth, async (req, res) => {
    const img = await models.StaticImage.findById(req.params.name, null, timeout).lean();
    if (!img) throw new HttpError(404, 'Image not found');
    await streamS3Object(deps.s3, log, { bucket: img.s3_bucket, key: img.s3_object_name, size: img.size, fileName: img._id }, req, res);
  });
  // Errors of these routes only; other paths fall through to the OTA app.
  r.use(errorHandler(log));
  return r;
}
