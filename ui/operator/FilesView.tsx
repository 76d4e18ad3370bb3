// Files in the OTA bucket: upload one (with progress), then deploy it to a robot. A deploy creates a job and
// switches to the jobs list filtered to that robot, where it goes PENDING → … → COMPLETED live.
import { useState, type FormEvent } from 'react';
import { DataTable, Field, Notice, Progress, formatBytes } from '../shared/components';
import { useAction, usePolling } from '../shared/hooks';
import type { ViewProps } from './App';
import type { FileDeployResult, FileRow, FileUploadResult } from './types';

function UploadForm({ api, onUploaded }: Pick<ViewProps, 'api'> & { onUploaded: (r: FileUploadResult) => void }) {
  const [file, setFile] = useState<File | null>(null);
  const [deployPath, setDeployPath] = useState('');
  const [progress, setProgress] = useState<number | null>(null);
  const { message, run } = useAction();

  const submit = async (e: FormEvent<HTMLFormElement>) => {
    e.preventDefault();
    if (!file) return;
    const formEl = e.currentTarget;
    const form = new FormData();
    form.append('file_info_list', JSON.stringify({ file_list: [{ s3_bucket: 'files', ...(deployPath ? { deploy_path: deployPath } : {}) }] }));
    form.append('files', file, file.name);
    setProgress(0);
    await run(
      true,
      async () => {
        const [r] = await api.upload<FileUploadResult[]>('/file/upload', form, setProgress);
        onUploaded(r);
        formEl.reset();
        setFile(null);
        return `Uploaded ${r.filename} as ${r.s3_object_name} (${formatBytes(r.size ?? 0)}, sha256 ${r.sha256?.slice(0, 12)}…).`;
      },
      'Upload failed',
    );
    setProgress(null);
  };

  return (
    <section className="panel" aria-labelledby="upload-h">
      <h3 id="upload-h">Upload a file</h3>
      <form onSubmit={(e) => void submit(e)}>
        <div className="form-grid">
          <Field label="File">
            <input type="file" name="file" onChange={(e) => setFile(e.target.files?.[0] ?? null)} required />
          </Field>
          <Field label="Default deploy path (optional)" hint="Absolute path on the robot">
            <input value={deployPath} onChange={(e) => setDeployPath(e.target.value)} placeholder="/opt/robot/config.yaml" />
          </Field>
          <div>
            <button type="submit" disabled={!file || progress !== null}>
              Upload
            </button>
          </div>
        </div>
      </form>
      {progress !== null ? <Progress label="Upload" value={progress} max={1} /> : null}
      {message ? <Notice tone={message.tone}>{message.text}</Notice> : null}
    </section>
  );
}

function DeployForm({ api, file, go, onClose }: Pick<ViewProps, 'api' | 'go'> & { file: FileRow; onClose: () => void }) {
  const [robot, setRobot] = useState(file.robot_id);
  const [deployPath, setDeployPath] = useState(file.deploy_path);
  const [timeout, setTimeoutS] = useState('');
  const { pending, message, run } = useAction();

  const submit = (e: FormEvent) => {
    e.preventDefault();
    const q = new URLSearchParams({ robot_id: robot, s3_bucket: file.s3_bucket, s3_object_name: file.s3_object_name, deploy_path: deployPath });
    if (timeout) q.set('timeout_s', timeout);
    return run(
      true,
      async () => {
        await api.post<FileDeployResult>(`/file/deploy_from_s3?${q.toString()}`);
        go('jobs', { robot_id: robot });
      },
      'Deploy refused',
    );
  };

  return (
    <section className="panel" aria-labelledby="deploy-h">
      <h3 id="deploy-h">
        Deploy <span className="mono">{file.file_name}</span> to a robot
      </h3>
      <form onSubmit={(e) => void submit(e)}>
        <div className="form-grid">
          <Field label="Robot id">
            <input value={robot} onChange={(e) => setRobot(e.target.value.trim())} required />
          </Field>
          <Field label="Deploy path" hint="Absolute path inside the robot's allowed roots">
            <input value={deployPath} onChange={(e) => setDeployPath(e.target.value)} required />
          </Field>
          <Field label="Timeout (s, optional)">
            <input type="number" min={1} value={timeout} onChange={(e) => setTimeoutS(e.target.value)} />
          </Field>
          <div className="row">
            <button type="submit" disabled={pending !== null}>
              Deploy
            </button>
            <button type="button" className="secondary" onClick={onClose}>
              Close
            </button>
          </div>
        </div>
      </form>
      {message ? <Notice tone={message.tone}>{message.text}</Notice> : null}
    </section>
  );
}

export function FilesView({ api, go }: ViewProps) {
  const files = usePolling(() => api.get<FileRow[]>('/file/list?s3_bucket=files'), 5000);
  const [deploying, setDeploying] = useState<FileRow | null>(null);

  return (
    <>
      <h2>Files &amp; deploy</h2>
      <UploadForm api={api} onUploaded={() => files.refresh()} />
      {deploying ? <DeployForm api={api} go={go} file={deploying} onClose={() => setDeploying(null)} /> : null}
      {files.error ? <Notice tone="error">Could not load files: {files.error}</Notice> : null}
      <section className="panel" aria-labelledby="files-h">
        <h3 id="files-h">Files</h3>
        <DataTable
          label="Files"
          rows={files.data}
          rowKey={(f) => `${f.s3_bucket}/${f.s3_object_name}`}
          rowData={(f) => ({ object: f.s3_object_name })}
          empty="No files yet: upload one above."
          columns={[
            { header: 'File', width: '22%', title: (f) => f.file_name, cell: (f) => f.file_name },
            { header: 'Object name', width: '30%', hideNarrow: true, cellClass: 'mono', title: (f) => f.s3_object_name, cell: (f) => f.s3_object_name },
            { header: 'Size', width: '10%', cell: (f) => formatBytes(f.size) },
            { header: 'sha256', width: '16%', hideNarrow: true, cellClass: 'mono', title: (f) => f.sha256, cell: (f) => `${f.sha256.slice(0, 12)}…` },
            {
              header: 'Actions',
              width: '22%',
              cell: (f) => (
                <button type="button" onClick={() => setDeploying(f)} aria-label={`Deploy ${f.s3_object_name}`}>
                  Deploy…
                </button>
              ),
            },
          ]}
        />
      </section>
    </>
  );
}
