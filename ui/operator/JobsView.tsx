// Jobs, newest first, refreshed every 1.5 s: status, live download progress, errors, cancel, and each job's
// workflow in Temporal Web.
import { useState } from 'react';
import { DataTable, Field, Notice, Progress, StatusBadge, formatBytes } from '../shared/components';
import { useAction, usePolling } from '../shared/hooks';
import type { ViewProps } from './App';
import { TERMINAL, type JobList, type JobState } from './types';

const STATUSES = ['', 'PENDING', 'RECEIVED', 'DOWNLOADING', 'COMPLETED', 'FAILED', 'CANCELED', 'TIMED_OUT'];

export function JobsView({ api, config, filter }: ViewProps) {
  const [robot, setRobot] = useState(filter.robot_id ?? '');
  const [status, setStatus] = useState('');
  const { pending, message, run } = useAction<string>();
  const query = new URLSearchParams({ limit: '50', ...(robot ? { robot_id: robot } : {}), ...(status ? { status } : {}) }).toString();
  const jobs = usePolling(() => api.get<JobList>(`/jobs?${query}`), 1500, [query]);

  const cancel = (job: JobState) =>
    run(
      job.job_id,
      async () => {
        await api.post(`/job/${encodeURIComponent(job.job_id)}/cancel`, { reason: 'canceled from the operator UI' });
        jobs.refresh();
        return `Cancel requested for job ${job.job_id}.`;
      },
      `Cancel of ${job.job_id} failed`,
    );

  return (
    <>
      <h2>Jobs</h2>
      <section className="panel" aria-label="Job filters">
        <div className="form-grid">
          <Field label="Robot id">
            <input value={robot} onChange={(e) => setRobot(e.target.value.trim())} placeholder="all robots" />
          </Field>
          <Field label="Status">
            <select value={status} onChange={(e) => setStatus(e.target.value)}>
              {STATUSES.map((s) => (
                <option key={s} value={s}>
                  {s || 'any'}
                </option>
              ))}
            </select>
          </Field>
        </div>
      </section>
      {message ? <Notice tone={message.tone}>{message.text}</Notice> : null}
      {jobs.error ? <Notice tone="error">Could not load jobs: {jobs.error}</Notice> : null}
      <section className="panel">
        <DataTable
          label="Jobs"
          rows={jobs.data?.jobs}
          rowKey={(j) => j.job_id}
          rowData={(j) => ({ 'job-id': j.job_id, status: j.status })}
          empty="No jobs match."
          columns={[
            { header: 'Job', width: '17%', cellClass: 'mono', title: (j) => j.job_id, cell: (j) => j.job_id },
            { header: 'Robot', width: '10%', cell: (j) => j.robot_id },
            { header: 'Deploy path', width: '20%', hideNarrow: true, cellClass: 'mono', title: (j) => j.deploy_path, cell: (j) => j.deploy_path },
            { header: 'Status', width: '12%', cell: (j) => <StatusBadge status={j.status} /> },
            {
              header: 'Progress / error',
              width: '17%',
              cellClass: 'wrap',
              cell: (j) =>
                j.error_msg ? (
                  <span className="muted">{j.error_msg}</span>
                ) : j.status === 'DOWNLOADING' && j.progress !== null ? (
                  <Progress label={`Download of ${j.file_name || j.s3_object_name}`} value={j.progress} max={100} />
                ) : (
                  <span className="muted">{formatBytes(j.size)}</span>
                ),
            },
            { header: 'Updated', width: '10%', hideNarrow: true, title: (j) => j.updated_at, cell: (j) => new Date(j.updated_at).toLocaleTimeString() },
            {
              header: 'Actions',
              width: '14%',
              cell: (j) => (
                <div className="row">
                  {!TERMINAL.has(j.status) ? (
                    <button type="button" className="danger" onClick={() => void cancel(j)} disabled={pending === j.job_id} aria-label={`Cancel job ${j.job_id}`}>
                      Cancel
                    </button>
                  ) : null}
                  <a
                    href={`${config.temporalWebUrl}/namespaces/${config.temporalNamespace}/workflows/${encodeURIComponent(j.workflow_id)}`}
                    target="_blank"
                    rel="noreferrer"
                    aria-label={`Workflow of job ${j.job_id} in Temporal Web`}
                  >
                    Temporal
                  </a>
                </div>
              ),
            },
          ]}
        />
      </section>
    </>
  );
}
