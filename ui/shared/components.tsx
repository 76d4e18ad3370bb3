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

/** One column of a {@link DataTable}: its header, share of the width, and how a row renders in it. */
export interface Column<T> {
  header: string;
  /** Share of the table width, e.g. '20%': fixed layout keeps the columns from jumping while data is polled. */
  width: string;
  /** Hidden on narrow (tablet portrait) screens: for columns a user can do without. */
  hideNarrow?: boolean;
  /** Extra class of the cells, e.g. 'mono' for ids and paths, 'wrap' for text that may be long. */
  cellClass?: string;
  /** Tooltip of a cell, for values the column may cut short. */
  title?: (row: T) => string | undefined;
  cell: (row: T) => ReactNode;
}

/**
 * A table of rows polled from the API: fixed column widths, hidden columns on narrow screens, data attributes on each
 * row (tests and scripts find rows by them) and a message when there are no rows.
 */
export function DataTable<T>({
  label,
  columns,
  rows,
  rowKey,
  rowData,
  empty,
}: {
  label: string;
  columns: Column<T>[];
  rows: readonly T[] | null | undefined;
  rowKey: (row: T) => string;
  /** `data-*` attributes of a row, without the prefix: `{ 'job-id': … }` becomes `data-job-id`. */
  rowData?: (row: T) => Record<string, string>;
  /** Shown when the rows have loaded and there are none; omitted, an empty table says nothing. */
  empty?: string;
}) {
  const narrow = (c: Column<T>, base?: string) => [base, c.hideNarrow ? 'hide-narrow' : undefined].filter(Boolean).join(' ') || undefined;
  return (
    <>
      <div className="table-wrap">
        <table aria-label={label}>
          <thead>
            <tr>
              {columns.map((c) => (
                <th key={c.header} style={{ width: c.width }} className={narrow(c)}>
                  {c.header}
                </th>
              ))}
            </tr>
          </thead>
          <tbody>
            {rows?.map((row) => {
              const data = Object.fromEntries(Object.entries(rowData?.(row) ?? {}).map(([k, v]) => [`data-${k}`, v]));
              return (
                <tr key={rowKey(row)} {...data}>
                  {columns.map((c) => (
                    <td key={c.header} className={narrow(c, c.cellClass)} title={c.title?.(row)}>
                      {c.cell(row)}
                    </td>
                  ))}
                </tr>
              );
            })}
          </tbody>
        </table>
      </div>
      {empty && rows && rows.length === 0 ? <p className="muted">{empty}</p> : null}
    </>
  );
}
