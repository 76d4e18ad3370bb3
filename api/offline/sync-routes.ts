// The offline app's cloud-sync endpoints ("Synchronize"):
//   POST /api/sync          starts the center's cloudSync run, or joins the running one (fixed workflow id)
//   GET  /api/sync          status of the latest run (live progress while it runs, the result once done)
//   GET  /api/sync/:runId   status of one run
import { WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError, type WorkflowClient } from '@temporalio/client';
import { Router } from 'express';
import type { Config } from '../../common/config';
import { cloudSync, cloudSyncProgressQuery, cloudSyncWorkflowId, type CloudSyncProgress, type CloudSyncResult } from '../../workflows/offline/cloud-sync';
import { HttpError } from '../ota/errors';

export interface SyncRunStatus {
  workflow_id: string;
  run_id: string;
  status: string;
  progress: CloudSyncProgress | null;
  /** Pending downloads' last heartbeat (RF and byte offset). */
  downloads: unknown[];
  result: CloudSyncResult | null;
  error: string | null;
}

export function syncRouter(deps: { cfg: Config; temporal: WorkflowClient }): Router {
  const { cfg, temporal } = deps;
  const r = Router();
  const workflowId = cloudSyncWorkflowId(cfg.offline.centerId);

  async function status(runId?: string): Promise<SyncRunStatus> {
    const handle = temporal.getHandle(workflowId, runId);
    let d;
    try {
      d = await handle.describe();
    } catch (e) {
      if (e instanceof WorkflowNotFoundError) throw new HttpError(404, runId ? `sync run ${runId} not found` : 'no sync has run yet');
      throw e;
    }
    const out: SyncRunStatus = { workflow_id: workflowId, run_id: d.runId, status: d.status.name, progress: null, downloads: [], result: null, error: null };
    const pinned = temporal.getHandle(workflowId, d.runId);
    if (d.status.name === 'RUNNING') {
      out.progress = await pinned.query(cloudSyncProgressQuery).catch(() => null);
      out.downloads = (d.raw.pendingActivities ?? []).flatMap((a) => (a.heartbeatDetails?.payloads?.length ? [{ activity: a.activityType?.name, attempt: a.attempt }] : []));
    } else if (d.status.name === 'COMPLETED') {
      out.result = (await pinned.result()) as CloudSyncResult;
    } else {
      out.error = await pinned.result().then(() => null, (e: unknown) => (e instanceof Error ? (e.cause instanceof Error ? e.cause.message : e.message) : String(e)));
    }
    return out;
  }

  r.post('/sync', async (_req, res) => {
    let joined = false;
    let runId: string;
    try {
      const handle = await temporal.start(cloudSync, {
        workflowId,
        taskQueue: cfg.offline.temporal.taskQueue,
        args: [{ centerId: cfg.offline.centerId }],
        searchAttributes: { CenterId: [cfg.offline.centerId] },
      });
      runId = handle.firstExecutionRunId;
    } catch (e) {
      // A run is in progress: this click joins it.
      if (!(e instanceof WorkflowExecutionAlreadyStartedError)) throw e;
      joined = true;
      runId = (await temporal.getHandle(workflowId).describe()).runId;
    }
    res.status(joined ? 200 : 202).json({ workflow_id: workflowId, run_id: runId, joined });
  });

  r.get('/sync', async (_req, res) => {
    res.json(await status());
  });
  r.get('/sync/:runId', async (req, res) => {
    if (!/^[0-9a-f-]{36}$/.test(req.params.runId)) throw new HttpError(400, 'runId: must be a run id (uuid)');
    res.json(await status(req.params.runId));
  });
  return r;
}
