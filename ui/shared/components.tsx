// Small building blocks shared by both apps: labelled progress bars, status badges, notices and byte counts.
import type { ReactNode } from 'react';

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

/** A progress bar that screen readers announce: `value` of `max`, with a visible text label. */
export function Progress({ label, value, max, text }: { label: string; value: number; max: number; text?: string }) {
  const pct = max > 0 ? Math.min(100, Math.round((value / max) * 100)) : 0;
  return (
    <div className="progress">
      <div className="progress-label">
        <span>{label}</span>
        <span>{text ?? `${pct}%`}</span>
      </div>
      <div className="progress-track" role="progressbar" aria-label={label} aria-valuemin={0} aria-valuemax={100} aria-valuenow={pct}>
        <div className="progress-fill" style={{ width: `${pct}%` }} />
      </div>
    </div>
  );
}

const STATUS_TONE: Record<string, string> = {
  COMPLETED: 'ok',
  SYNCED: 'ok',
  CONNECTED: 'ok',
  'NOT CONNECTED': 'muted',
  RUNNING: 'info',
  PARTIAL: 'warn',
  UNREACHABLE: 'bad',
  'HOST KEY MISMATCH': 'bad',
  'CREDENTIAL REFUSED': 'bad',
  SUCCEEDED: 'ok',
  UPLOADED: 'ok',
  FAILED: 'bad',
  TIMED_OUT: 'bad',
  CANCELED: 'muted',
  PAUSED: 'warn',
  PENDING: 'warn',
};

export function StatusBadge({ status }: { status: string }) {
  return <span className={`badge badge-${STATUS_TONE[status.toUpperCase()] ?? 'info'}`}>{status}</span>;
}

export function Notice({ tone, children }: { tone: 'error' | 'info' | 'success' | 'warning'; children: ReactNode }) {
  return (
    <div className={`notice notice-${tone}`} role={tone === 'error' || tone === 'warning' ? 'alert' : 'status'}>
      {children}
    </div>
  );
}

export function Field({ label, children, hint }: { label: string; children: ReactNode; hint?: string }) {
  return (
    <label className="field">
      <span className="field-label">{label}</span>
      {children}
      {hint ? <span className="field-hint">{hint}</span> : null}
    </label>
  );
}
