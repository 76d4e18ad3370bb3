// Where a rollout's time goes, read from its workflow history (every run, continue-as-new included): each
// activity's schedule → completion span and each rolloutEvents signal (with how many reports and returns it
// carried), relative to the rollout's creation. Printed by bench/ota-rollout.ts as `stage_*` figures and a
// timeline on stderr.
import type { Client } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { defaultPayloadConverter } from '@temporalio/common';
import type { RolloutEvents } from '../workflows/ota-rollout-contract';
import { eventMs as ms } from './common';

const EventType = temporal.api.enums.v1.EventType;

export interface StageSpan {
  kind: string;
  startS: number;
  endS: number;
  /** Signals: reports + returns carried. */
  entries?: number;
}

export interface RolloutTimeline {
  spans: StageSpan[];
  /** Per activity type (and 'signal'): how many, and total seconds. */
  totals: Map<string, { count: number; seconds: number }>;
}

export async function rolloutTimeline(client: Client, workflowId: string, runIds: readonly string[], t0: number): Promise<RolloutTimeline> {
  const spans: StageSpan[] = [];
  for (const runId of runIds) {
    const history = await client.workflow.getHandle(workflowId, runId).fetchHistory();
    const scheduled = new Map<string, { kind: string; at: number }>();
    for (const e of history.events ?? []) {
      const at = (ms(e.eventTime) - t0) / 1000;
      if (e.eventType === EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED) {
        scheduled.set(String(e.eventId), { kind: e.activityTaskScheduledEventAttributes?.activityType?.name ?? '?', at });
      } else if (e.eventType === EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED) {
        const s = scheduled.get(String(e.activityTaskCompletedEventAttributes?.scheduledEventId));
        if (s) spans.push({ kind: s.kind, startS: s.at, endS: at });
      } else if (e.eventType === EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED) {
        const a = e.workflowExecutionSignaledEventAttributes;
        let entries: number | undefined;
        if (a?.signalName === 'rolloutEvents' && a.input?.payloads?.[0]) {
          const ev = defaultPayloadConverter.fromPayload<RolloutEvents>(a.input.payloads[0]);
          entries = ev.reports.length + ev.online.length;
        }
        spans.push({ kind: `signal:${a?.signalName ?? '?'}`, startS: at, endS: at, entries });
      }
    }
  }
  const totals = new Map<string, { count: number; seconds: number }>();
  for (const s of spans) {
    const t = totals.get(s.kind) ?? { count: 0, seconds: 0 };
    t.count++;
    t.seconds += s.endS - s.startS;
    totals.set(s.kind, t);
  }
  return { spans, totals };
}

/** One line per span, for the benchmark's stderr. */
export function formatTimeline(t: RolloutTimeline): string {
  return t.spans
    .map((s) => `  ${s.startS.toFixed(2).padStart(7)}s ${s.endS > s.startS ? `→ ${s.endS.toFixed(2).padStart(7)}s` : '          '} ${s.kind}${s.entries !== undefined ? ` (${s.entries})` : ''}`)
    .join('\n');
}
