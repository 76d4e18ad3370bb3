// The reference README's curl examples (seeds/001, "API reference"), run with the real `curl` against our API.
// The only changes: the Authorization header, our host/port, and the README's example object name / job id
// replaced by the ones the earlier calls returned. (The scraped README shows the upload part as
// "[email protected]": an e-mail obfuscation artifact of `files=@test.txt`.)
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { startHarness, type Harness } from './harness';

const run = promisify(execFile);

const README = {
  upload: `curl -X 'POST' \\
  'http://127.0.0.1:9005/api/v1/file/upload' \\
  -H 'accept: application/json' \\
  -H 'Content-Type: multipart/form-data' \\
  -F 'file_info_list={
  "file_list": [
    {
      "s3_bucket": "files",
      "robot_id": "robot01",
      "file_metadata": {"type": "test"}
    }
  ]
}' \\
  -F 'files=@test.txt;type=text/plain'`,
  list: `curl -X 'GET' \\
  'http://localhost:9005/api/v1/file/list?robot_id=robot01'`,
  deploy: `curl -X 'POST' \\
  'http://127.0.0.1:9005/api/v1/file/deploy' \\
  -H 'accept: application/json' \\
  -H 'Content-Type: multipart/form-data' \\
  -F 'file_info_list={
  "file_list": [
    {
      "s3_bucket": "files",
      "robot_id": "robot01",
      "deploy_path": "/tmp/test.txt"
    }
  ]
}' \\
  -F 'files=@test.txt;type=text/plain'`,
  deployFromS3: `curl -X 'POST' \\
  'http://127.0.0.1:9005/api/v1/file/deploy_from_s3?robot_id=robot01&s3_bucket=files&s3_object_name=test.txt_bdc28a7a-d504-47d9-84b8-bfc07667cea7&deploy_path=%2Ftmp%2Fdeploy' `,
  download: `curl -X 'GET' \\
  'http://127.0.0.1:9005/api/v1/file/download?s3_object_name=test.txt_bdc28a7a-d504-47d9-84b8-bfc07667cea7&s3_bucket=files'`,
  update: `curl -X 'PATCH' \\
  'http://localhost:9005/api/v1/file/update' \\
  -H 'accept: application/json' \\
  -H 'Content-Type: multipart/form-data' \\
  -F 'file_info={
  "s3_bucket": "files",
  "s3_object_name": "test.txt_50d3252b-80f3-4803-a30b-57784012d080",
  "robot_id": "robot02"
}'`,
  delete: `curl -X 'DELETE' \\
  'http://localhost:9005/api/v1/file/delete?s3_bucket=files&s3_object_name=test.txt_bdc28a7a-d504-47d9-84b8-bfc07667cea7'`,
  jobState: `curl -X 'GET' \\
  'http://127.0.0.1:9005/api/v1/job_state/bdc28a7a-d504-47d9-84b8-bfc07667cea7'`,
};

let h: Harness;
let dir: string;
const CONTENT = 'hello from the README\n';

beforeAll(async () => {
  h = await startHarness();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ota-readme-'));
  fs.writeFileSync(path.join(dir, 'test.txt'), CONTENT);
});
afterAll(async () => {
  await h?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Runs a README command with only the Authorization header added; returns the HTTP status and body. */
async function curl(cmd: string, swap: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  let c = cmd.replace(/http:\/\/(127\.0\.0\.1|localhost):9005\/api\/v1/g, h.base);
  for (const [from, to] of Object.entries(swap)) c = c.split(from).join(to);
  c = c.replace(/^curl /, `curl -sS -w '\\n%{http_code}' -H 'Authorization: Bearer ${h.token}' `);
  const { stdout } = await run('bash', ['-c', c], { cwd: dir });
  const cut = stdout.lastIndexOf('\n');
  return { status: Number(stdout.slice(cut + 1)), body: stdout.slice(0, cut) };
}

const EXAMPLE_OBJECT = 'test.txt_bdc28a7a-d504-47d9-84b8-bfc07667cea7';

it('runs every README example in order', async () => {
  const up = await curl(README.upload);
  expect(up.status).toBe(200);
  const [uploaded] = JSON.parse(up.body) as { s3_object_name: string; state: string; robot_id: string }[];
  expect(uploaded).toMatchObject({ state: 'UPLOADED', robot_id: 'robot01', s3_bucket: 'files', filename: 'test.txt' });
  const object = uploaded.s3_object_name;

  const list = await curl(README.list);
  expect(list.status).toBe(200);
  expect(JSON.parse(list.body)).toEqual([expect.objectContaining({ s3_object_name: object, robot_id: 'robot01', file_metadata: { type: 'test' } })]);

  const deploy = await curl(README.deploy);
  expect(deploy.status).toBe(200);
  const [deployed] = JSON.parse(deploy.body) as { job_id: string; state: string; deploy_path: string }[];
  expect(deployed).toMatchObject({ state: 'PENDING', deploy_path: '/tmp/test.txt', robot_id: 'robot01' });
  // Its workflow (the batch's: api/ota/deploy-batcher.ts) runs; the job names it.
  const workflowId = (await h.db.models.OtaJob.findById(deployed.job_id).lean())!.workflow_id;
  expect((await h.temporal.getHandle(workflowId).describe()).status.name).toBe('RUNNING');

  const fromS3 = await curl(README.deployFromS3, { [EXAMPLE_OBJECT]: object });
  expect(fromS3.status).toBe(200);
  const job = JSON.parse(fromS3.body) as { job_id: string };
  expect(JSON.parse(fromS3.body)).toMatchObject({ state: 'PENDING', deploy_path: '/tmp/deploy', s3_object_name: object });

  const state = await curl(README.jobState, { 'bdc28a7a-d504-47d9-84b8-bfc07667cea7': job.job_id });
  expect(state.status).toBe(200);
  expect(JSON.parse(state.body)).toMatchObject({ job_id: job.job_id, status: 'PENDING', robot_id: 'robot01', deploy_path: '/tmp/deploy' });

  const dl = await curl(README.download, { [EXAMPLE_OBJECT]: object });
  expect(dl).toEqual({ status: 200, body: CONTENT });

  const upd = await curl(README.update, { 'test.txt_50d3252b-80f3-4803-a30b-57784012d080': object });
  expect(upd.status).toBe(200);
  expect(JSON.parse(upd.body)).toMatchObject({ s3_object_name: object, robot_id: 'robot02' });

  const del = await curl(README.delete, { [EXAMPLE_OBJECT]: object });
  expect(del).toEqual({ status: 200, body: 'null' });
  expect((await curl(README.download, { [EXAMPLE_OBJECT]: object })).status).toBe(404);
});

it('answers the README commands with 401 when the token is missing', async () => {
  const c = README.list.replace(/http:\/\/(127\.0\.0\.1|localhost):9005\/api\/v1/g, h.base).replace(/^curl /, `curl -sS -w '\\n%{http_code}' `);
  const { stdout } = await run('bash', ['-c', c], { cwd: dir });
  expect(stdout).toBe('{"detail":"Not authenticated"}\n401');
});
