// Cloud sync's HTTP side on the center: the POST /sync exchange and the downloads of static images and RFs.
// The center's JWT is read here, from configuration, and never leaves the activity: workflows pass run ids.
// The /sync answer and the download plan are files in the run's work directory; the workflow sees counts.
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from '../../common/config';
import type { OfflineModels, SyncRecord } from '../../common/models/offline';
import type { SyncRequest, SyncResponse } from '../../api/cloud-sync/router';
import { cachePath, centerDirs, readJson, runDir } from '../files/rf-cache';
import { authFailure, ChecksumMismatchError, downloadResumable } from './download';

/** The offline app's version, sent with every /sync (the cloud's version map decides compatibility). */
export const OFFLINE_APP_VERSION = '2.0.0';

export interface ExchangeResult {
  compatible: boolean;
  message: string | null;
  sent: { sessions: number; children: number };
  upstream: SyncResponse['upstream'];
  /** Upstream records changed after this instant go with the next sync (recorded once the run succeeds). */
  cursor: string | null;
  downstream: { actions: number; categories: number; skills: number; images: number; robots: number; entries: number };
}

export interface PlannedRf {
  sha256: string;
  size: number;
  url: string;
}

export interface BatchResult {
  downloaded: number;
  bytes: number;
  fetched: number;
  resumed: number;
  failed: { sha256: string; error: string }[];
}

/** Attempts per RF inside one batch before the RF is reported as failed (sha256 mismatch, broken stream). */
export const RF_ATTEMPTS = 3;

function centerJwt(cfg: Config): string {
  if (!cfg.offline.centerJwt) throw ApplicationFailure.nonRetryable('CENTER_JWT is not configured on this center', 'CenterAuthFailed');
  return cfg.offline.centerJwt;
}

function heartbeat(details: unknown): void {
  try {
    Context.current().heartbeat(details);
  } catch {
    // Outside an activity (scripts, tests): nothing to report to.
  }
}

const toWire = (r: SyncRecord) => ({ id: r._id, updated_at: r.updated_at.toISOString(), data: r.data as Record<string, unknown> });

export function createCloudSyncHttpActivities(deps: { cfg: Config; models: OfflineModels }) {
  const { cfg, models } = deps;
  const dirs = centerDirs(cfg);
  const timeout = { maxTimeMS: cfg.mongo.timeoutMs };

  async function collect(): Promise<{ body: SyncRequest; cursor: string | null }> {
    const state = await models.SyncState.findById('cloud', null, timeout).lean();
    const since = state?.cursor ? { updated_at: { $gt: state.cursor } } : {};
    const [sessions, children] = await Promise.all([
      models.upstream.sessions.find(since, null, timeout).lean(),
      models.upstream.children.find(since, null, timeout).lean(),
    ]);
    let max = state?.cursor ?? null;
    for (const r of [...sessions, ...children]) if (!max || r.updated_at > max) max = r.updated_at;
    const totals = await models.InventoryEntry.aggregate<{ _id: string; files: number; bytes: number }>([
      { $group: { _id: '$robot_id', files: { $sum: 1 }, bytes: { $sum: '$size' } } },
    ]).option(timeout);
    const robots = await models.Robot.find({}, { last_inventory_at: 1 }, timeout).lean();
    const taken = new Map(robots.map((r) => [r._id, r.last_inventory_at]));
    return {
      body: {
        app_version: OFFLINE_APP_VERSION,
        sessions: sessions.map(toWire),
        children: children.map(toWire),
        inventories: totals.map((t) => ({ robot_id: t._id, files: t.files, bytes: t.bytes, taken_at: taken.get(t._id)?.toISOString() ?? null })),
      },
      cursor: max ? max.toISOString() : null,
    };
  }

  return {
    /** Collects the changed upstream records, POSTs /sync and keeps the answer in the run's work directory. */
    async exchangeWithCloud({ runId }: { runId: string }): Promise<ExchangeResult> {
      const token = centerJwt(cfg);
      const { body, cursor } = await collect();
      let res: Response;
      try {
        res = await fetch(`${cfg.offline.cloudApiUrl}/api/v1/sync`, {
          method: 'POST',
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
          body: JSON.stringify(body),
        });
      } catch (e) {
        // Unreachable cloud (no internet, API down): retried with backoff by the workflow's policy.
        throw new Error(`cloud API ${cfg.offline.cloudApiUrl} unreachable: ${(e as Error & { cause?: Error }).cause?.message ?? (e as Error).message}`);
      }
      const text = await res.text();
      const detail = () => {
        try {
          return String((JSON.parse(text) as { detail?: unknown }).detail ?? text.slice(0, 300));
        } catch {
          return text.slice(0, 300);
        }
      };
      if (res.status === 401 || res.status === 403) throw authFailure(res.status, detail());
      if (res.status >= 400 && res.status < 500) throw ApplicationFailure.nonRetryable(`the cloud rejected /sync (HTTP ${res.status}): ${detail()}`, 'SyncRejected');
      if (!res.ok) throw new Error(`/sync failed: HTTP ${res.status} ${detail()}`);
      const answer = JSON.parse(text) as SyncResponse;
      fs.mkdirSync(runDir(dirs, runId), { recursive: true });
      fs.writeFileSync(path.join(runDir(dirs, runId), 'sync-response.json'), text);
      return {
        compatible: answer.is_compatible,
        message: answer.message,
        sent: { sessions: body.sessions?.length ?? 0, children: body.children?.length ?? 0 },
        upstream: answer.upstream,
        cursor,
        downstream: {
          actions: answer.actions.length,
          categories: answer.categories.length,
          skills: answer.skills.length,
          images: answer.static_images.length,
          robots: answer.perfect_state.length,
          entries: answer.perfect_state.reduce((n, r) => n + r.entries.length, 0),
        },
      };
    },

    /** Downloads the static images the center does not have (verified, atomically placed). */
    async downloadImages({ runId }: { runId: string }): Promise<BatchResult> {
      const token = centerJwt(cfg);
      const answer = readJson<SyncResponse>(path.join(runDir(dirs, runId), 'sync-response.json'));
      fs.mkdirSync(dirs.images, { recursive: true });
      const out: BatchResult = { downloaded: 0, bytes: 0, fetched: 0, resumed: 0, failed: [] };
      for (const img of answer.static_images) {
        const target = path.join(dirs.images, path.basename(img.name));
        const known = await models.StaticImage.findById(img.name, null, timeout).lean();
        if (known?.stored_at && known.sha256 === img.sha256 && fs.existsSync(target)) continue;
        try {
          const r = await downloadResumable({ url: img.url, sha256: img.sha256, size: img.size, target }, token, () => heartbeat({ image: img.name }));
          await models.StaticImage.updateOne({ _id: img.name }, { $set: { sha256: img.sha256, size: img.size, url: img.url, stored_at: new Date() } }, { upsert: true });
          out.downloaded++;
          out.bytes += img.size;
          out.fetched += r.fetched;
        } catch (e) {
          if (e instanceof ApplicationFailure) throw e;
          if (!(e instanceof ChecksumMismatchError)) throw e;
          out.failed.push({ sha256: img.sha256, error: e.message });
        }
        heartbeat({ image: img.name });
      }
      return out;
    },

    /**
     * Downloads one batch of the plan into the RF cache, one RF after the other. The heartbeat carries the RF and
     * byte offset in progress; a retried attempt skips what is cached and resumes the RF's `.part`.
     */
    async downloadRfBatch({ runId, batch }: { runId: string; batch: number }): Promise<BatchResult> {
      const token = centerJwt(cfg);
      const plan = readJson<PlannedRf[][]>(path.join(runDir(dirs, runId), 'rf-plan.json'))[batch] ?? [];
      fs.mkdirSync(dirs.cache, { recursive: true });
      const out: BatchResult = { downloaded: 0, bytes: 0, fetched: 0, resumed: 0, failed: [] };
      for (const rf of plan) {
        const target = cachePath(dirs, rf.sha256);
        if (fs.existsSync(target)) continue;
        for (let attempt = 1; ; attempt++) {
          try {
            const r = await downloadResumable({ ...rf, target }, token, (offset) => heartbeat({ sha256: rf.sha256, offset }));
            out.downloaded++;
            out.bytes += rf.size;
            out.fetched += r.fetched;
            if (r.resumedFrom > 0) out.resumed++;
            break;
          } catch (e) {
            if (e instanceof ApplicationFailure) throw e;
            if (!(e instanceof ChecksumMismatchError) || attempt >= RF_ATTEMPTS) {
              if (e instanceof ChecksumMismatchError) {
                out.failed.push({ sha256: rf.sha256, error: e.message });
                break;
              }
              throw e;
            }
          }
        }
        heartbeat({ sha256: rf.sha256, offset: rf.size });
      }
      return out;
    },
  };
}

export type CloudSyncHttpActivities = ReturnType<typeof createCloudSyncHttpActivities>;
