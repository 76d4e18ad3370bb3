// The API's response shapes, taken from the server's own zod schemas (type-only imports: nothing of the server is
// bundled), so the UI and the API cannot drift apart silently.
export type { DeployTargetRow, FileDeployResult, FileRow, FileUploadResult, JobState } from '../../api/ota/schemas';

export interface JobList {
  jobs: import('../../api/ota/schemas').JobState[];
  next_cursor: string | null;
}

/** `/ui/config.json`: what the page needs to know about its surroundings. */
export interface UiConfig {
  apiBase: string;
  temporalWebUrl: string;
  temporalNamespace: string;
}

export const TERMINAL = new Set(['COMPLETED', 'FAILED', 'CANCELED', 'TIMED_OUT']);
