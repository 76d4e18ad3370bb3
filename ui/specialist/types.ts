// The offline app's response shapes, from the workflows' own types (type-only imports: nothing of the server is
// bundled).
import type { CloudSyncProgress, CloudSyncResult } from '../../workflows/offline/cloud-sync';
import type { RobotSyncProgress, RobotSyncResult } from '../../workflows/offline/robot-sync';

export type { CloudSyncProgress, CloudSyncResult, RobotSyncProgress, RobotSyncResult };

export interface RobotView {
  robot_id: string;
  host: string;
  port: number;
  username: string;
  credential_ref: string;
  host_key_sha256: string | null;
  connected: boolean;
  rf_root: string;
  last_inventory_at: string | null;
  last_sync: { at?: string; status?: string; error?: string | null } | null;
}

/** GET /api/sync and GET /api/robots/sync: the latest run of the workflow, live progress, and its result. */
export interface RunView<P, R> {
  workflow_id: string;
  run_id?: string;
  status: string;
  progress: P | null;
  result: R | null;
  error?: string | null;
}

export type CloudSyncView = RunView<CloudSyncProgress, CloudSyncResult>;
export type RobotSyncView = RunView<RobotSyncProgress, RobotSyncResult>;

export interface UiConfig {
  apiBase: string;
  centerId: string;
  temporalWebUrl: string;
  temporalNamespace: string;
}

export const workflowUrl = (c: UiConfig, workflowId: string) =>
  `${c.temporalWebUrl}/namespaces/${encodeURIComponent(c.temporalNamespace)}/workflows/${encodeURIComponent(workflowId)}`;
