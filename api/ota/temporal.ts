// The API's side of the otaDeployment workflow: start it by name (the workflow code lives with the workers),
// signal it, query it; each call bounded in time so a slow or absent Temporal never hangs a request.
import {
  isGrpcDeadlineError,
  isGrpcServiceError,
  WorkflowExecutionAlreadyStartedError,
  WorkflowIdReusePolicy,
  WorkflowNotFoundError,
} from '@temporalio/client';
import type { JobStatus } from '../../common/protocol';
import {
  cancelJobSignal,
  jobProgressQuery,
  OTA_DEPLOYMENT_WORKFLOW,
  otaWorkflowId,
  type OtaDeploymentInput,
  type OtaJobProgress,
} from '../../workflows/ota-contract';
import { DEPLOYMENT_ID_SA, JOB_STATE_SA, ROBOT_ID_SA } from '../../workflows/search-attributes';
import { OTA_ROLLOUT_WORKFLOW, rolloutWorkflowId, type OtaRolloutInput } from '../../workflows/ota-rollout-contract';
import type { SignalDefinition } from '@temporalio/client';
import type { OtaContext } from './types';


const GRPC_UNAVAILABLE = 14;
const GRPC_DEADLINE_EXCEEDED = 4;

/** True when the failure says "Temporal could not be reached in time" (answer 503) rather than "Temporal said no". */
export function isTemporalUnavailable(e: unknown): boolean {
  if (isGrpcDeadlineError(e)) return true;
  for (let cur: unknown = e, depth = 0; cur && depth < 5; depth++) {
    if (isGrpcServiceError(cur) && (cur.code === GRPC_UNAVAILABLE || cur.code === GRPC_DEADLINE_EXCEEDED)) return true;
    cur = cur instanceof Error ? cur.cause : undefined;
  }
  return false;
}

const withTimeout = <R>(ctx: OtaContext, ms: number, fn: () => Promise<R>): Promise<R> =>
  ctx.temporal.withDeadline(Date.now() + ms, fn);

/** 'started': this call (or its own earlier, ambiguous attempt) started the run; 'exists': a run with this id
 * was already there, running or closed. */
export type StartResult = 'started' | 'exists';

/**
 * Starts the job's workflow, idempotently: one workflow id per job, and a closed run is never followed by a
 * second one (REJECT_DUPLICATE), so a retried start (the reconciler, a repeated request) cannot deliver a job
 * twice. An ambiguous failure (deadline hit after the server may have accepted the start) is resolved by looking
 * the run up, so a job is never marked FAILED while its workflow is in fact running.
 */
export async function startDeploymentWorkflow(ctx: OtaContext, input: OtaDeploymentInput): Promise<StartResult> {
  const workflowId = otaWorkflowId(input.jobId);
  const status: JobStatus = 'PENDING';
  try {
    await withTimeout(ctx, ctx.options.temporalTimeoutMs, () =>
      ctx.temporal.start(OTA_DEPLOYMENT_WORKFLOW, {
        taskQueue: ctx.cfg.temporal.taskQueue,
        workflowId,
        workflowIdReusePolicy: WorkflowIdReusePolicy.REJECT_DUPLICATE,
        args: [input],
        // Runs are searchable in Temporal Web by robot and state from the first moment (the workflow upserts JobState).
        typedSearchAttributes: [
          { key: ROBOT_ID_SA, value: input.robotId },
          { key: JOB_STATE_SA, value: status },
        ],
      }),
    );
    return 'started';
  } catch (e) {
    // An earlier attempt of ours got through, or the run exists already (running or closed).
    if (e instanceof WorkflowExecutionAlreadyStartedError) return 'exists';
    const exists = await withTimeout(ctx, ctx.options.temporalTimeoutMs, () => ctx.temporal.getHandle(workflowId).describe()).then(
      () => true,
      () => false,
    );
    if (!exists) throw e;
    return 'started';
  }
}

/**
 * Which of these workflow ids have a run (running or closed), from Temporal's visibility store: one query for up
 * to 50 ids. Visibility lags a little behind starts; callers only use it to skip work, never to decide a start
 * is safe (the start itself is idempotent).
 */
export async function existingWorkflowIds(ctx: OtaContext, workflowIds: readonly string[]): Promise<Set<string>> {
  const found = new Set<string>();
  if (workflowIds.length === 0) return found;
  const query = `WorkflowId IN (${workflowIds.map((id) => JSON.stringify(id)).join(', ')})`;
  await withTimeout(ctx, ctx.options.temporalTimeoutMs, async () => {
    for await (const wf of ctx.temporal.list({ query, pageSize: 100 })) found.add(wf.workflowId);
  });
  return found;
}

/** Live progress of a running job, or null when the workflow cannot answer in time (no worker, closed, down). */
export async function queryJobProgress(ctx: OtaContext, workflowId: string): Promise<OtaJobProgress | null> {
  try {
    return await withTimeout(ctx, ctx.options.queryTimeoutMs, () => ctx.temporal.getHandle(workflowId).query(jobProgressQuery));
  } catch (err) {
    ctx.log.debug({ err, workflowId }, 'job progress query failed');
    return null;
  }
}

export type CancelOutcome = 'signalled' | 'not-running';

export async function signalCancel(ctx: OtaContext, workflowId: string, reason: string | undefined): Promise<CancelOutcome> {
  try {
    await withTimeout(ctx, ctx.options.temporalTimeoutMs, () => ctx.temporal.getHandle(workflowId).signal(cancelJobSignal, { reason }));
    return 'signalled';
  } catch (e) {
    if (e instanceof WorkflowNotFoundError) return 'not-running';
    throw e;
  }
}

/** Starts a rollout's workflow (one per rollout id, never a second run), searchable by DeploymentId. */
export async function startRolloutWorkflow(ctx: OtaContext, input: OtaRolloutInput): Promise<void> {
  await withTimeout(ctx, ctx.options.temporalTimeoutMs, () =>
    ctx.temporal.start(OTA_ROLLOUT_WORKFLOW, {
      taskQueue: ctx.cfg.temporal.taskQueue,
      workflowId: rolloutWorkflowId(input.rolloutId),
      workflowIdReusePolicy: WorkflowIdReusePolicy.REJECT_DUPLICATE,
      args: [input],
      typedSearchAttributes: [{ key: DEPLOYMENT_ID_SA, value: input.rolloutId }],
    }),
  );
}

/** Signals a running workflow; 'not-running' when it has ended (or never started). */
export async function signalWorkflow<Args extends unknown[]>(ctx: OtaContext, workflowId: string, def: SignalDefinition<Args>, ...args: Args): Promise<CancelOutcome> {
  try {
    await withTimeout(ctx, ctx.options.temporalTimeoutMs, () => ctx.temporal.getHandle(workflowId).signal(def, ...args));
    return 'signalled';
  } catch (e) {
    if (e instanceof WorkflowNotFoundError) return 'not-running';
    throw e;
  }
}
