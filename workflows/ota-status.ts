// The OTA job's status order, shared by the workflow (which reports to follow) and the DB activity (which writes
// to allow). Statuses only move forward: PENDING → RECEIVED → DOWNLOADING → one terminal status. A late or
// replayed report (RECEIVED after DOWNLOADING, anything after COMPLETED) is therefore a no-op, never a rollback:
// the reference overwrote status unguarded (notes/ota-file-service.md §6).
// Workflow-safe and dependency-free on purpose: common/protocol.ts pulls in zod, which workflow code does not need.
import type { JobStatus } from '../common/protocol';

const RANK: Record<JobStatus, number> = {
  PENDING: 0,
  RECEIVED: 1,
  DOWNLOADING: 2,
  COMPLETED: 3,
  FAILED: 3,
  CANCELED: 3,
  TIMED_OUT: 3,
};

/** Same set as TERMINAL_STATUSES in common/protocol.ts (a test keeps them in step). */
export const isTerminalStatus = (s: JobStatus): boolean => RANK[s] === 3;

/** True when `to` is a forward move from `from`; never out of a terminal status, never sideways. */
export const isForwardTransition = (from: JobStatus, to: JobStatus): boolean =>
  !isTerminalStatus(from) && RANK[to] > RANK[from];

/** Every status from which a write of `to` is a forward move (the DB guard's filter). */
export const statusesBefore = (to: JobStatus): JobStatus[] =>
  (Object.keys(RANK) as JobStatus[]).filter((from) => isForwardTransition(from, to));
