// The reference service's own flow, driven by the curl commands of its README with only an Authorization
// header added: upload → list → deploy_from_s3 → job_state COMPLETED within 10 s → download → update → delete.
// The bytes land on a simulated robot, written by a real daemon that received the job over MQTT.
import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { sha256File, testRobots } from '../helpers';
import { startOtaSystem, waitForJob, type OtaSystem } from './system';

const run = promisify(execFile);
let sys: OtaSystem;
const robot = testRobots()[0];
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'ota-ref-'));

beforeAll(async () => {
  sys = await startOtaSystem({ daemonsFor: [robot] });
});
afterAll(async () => {
  await sys?.stop();
  fs.rmSync(work, { recursive: true, force: true });
});

async function curl(args: string[]): Promise<{ status: number; body: string }> {
  const { stdout } = await run('curl', ['-sS', '-w', '\n%{http_code}', '-H', `Authorization: Bearer ${sys.token}`, ...args], { cwd: work });
  const i = stdout.lastIndexOf('\n');
  return { status: Number(stdout.slice(i + 1)), body: stdout.slice(0, i) };
}

test('upload, list, deploy_from_s3, job_state, download, update and delete work as in the reference README', async () => {
  const content = `hello robot ${crypto.randomUUID()}\n`;
  fs.writeFileSync(path.join(work, 'test.txt'), content);

  const up = await curl([
    '-X', 'POST', `${sys.baseUrl}/file/upload`,
    '-H', 'accept: application/json', '-H', 'Content-Type: multipart/form-data',
    '-F', `file_info_list={ "file_list": [ { "s3_bucket": "files", "robot_id": "${robot.id}", "file_metadata": {"type": "test"} } ] }`,
    '-F', 'files=@test.txt;type=text/plain',
  ]);
  expect(up.status).toBe(200);
  const [uploaded] = JSON.parse(up.body) as Array<{ s3_object_name: string; state: string; filename: string }>;
  expect(uploaded.state).toBe('UPLOADED');
  expect(uploaded.s3_object_name).toMatch(/^test\.txt_[0-9a-f-]{36}$/);

  const list = await curl(['-X', 'GET', `${sys.baseUrl}/file/list?robot_id=${robot.id}`]);
  expect(list.status).toBe(200);
  const files = JSON.parse(list.body) as Array<{ s3_object_name: string; sha256: string; file_metadata: Record<string, string> }>;
  const listed = files.find((f) => f.s3_object_name === uploaded.s3_object_name);
  expect(listed?.sha256).toBe(crypto.createHash('sha256').update(content).digest('hex'));
  expect(listed?.file_metadata).toEqual({ type: 'test' });

  const target = path.join(robot.root, 'deploy', `ref-${Date.now()}.txt`);
  const started = Date.now();
  const dep = await curl([
    '-X', 'POST',
    `${sys.baseUrl}/file/deploy_from_s3?robot_id=${robot.id}&s3_bucket=files&s3_object_name=${uploaded.s3_object_name}&deploy_path=${encodeURIComponent(target)}`,
  ]);
  expect(dep.status).toBe(200);
  const job = JSON.parse(dep.body) as { job_id: string; state: string };
  expect(job.state).toBe('PENDING');

  const done = await waitForJob(sys, job.job_id, ['COMPLETED', 'FAILED'], 10000);
  expect(done.status).toBe('COMPLETED');
  expect(Date.now() - started).toBeLessThan(10000);
  expect(fs.readFileSync(target, 'utf8')).toBe(content);

  const state = await curl(['-X', 'GET', `${sys.baseUrl}/job_state/${job.job_id}`]);
  expect(state.status).toBe(200);
  const stateBody = JSON.parse(state.body) as { transitions: Array<{ status: string }> };
  expect(stateBody).toMatchObject({ job_id: job.job_id, status: 'COMPLETED', robot_id: robot.id, deploy_path: target, error_msg: null });
  // Every state change the cloud saw is in the job's history, in order, ending COMPLETED.
  const seen = stateBody.transitions.map((t) => t.status);
  expect(seen[seen.length - 1]).toBe('COMPLETED');
  expect(seen).toEqual(['RECEIVED', 'DOWNLOADING', 'COMPLETED'].filter((s) => seen.includes(s)));

  const deployState = await curl(['-X', 'GET', `${sys.baseUrl}/deploy_state/${robot.id}`]);
  expect(JSON.parse(deployState.body)).toEqual(
    expect.arrayContaining([expect.objectContaining({ robot_id: robot.id, deploy_path: target, s3_object_name: uploaded.s3_object_name })]),
  );

  const down = await curl(['-X', 'GET', `${sys.baseUrl}/file/download?s3_object_name=${uploaded.s3_object_name}&s3_bucket=files`, '-o', 'downloaded.txt']);
  expect(down.status).toBe(200);
  expect(fs.readFileSync(path.join(work, 'downloaded.txt'), 'utf8')).toBe(content);

  const upd = await curl([
    '-X', 'PATCH', `${sys.baseUrl}/file/update`,
    '-H', 'accept: application/json', '-H', 'Content-Type: multipart/form-data',
    '-F', `file_info={ "s3_bucket": "files", "s3_object_name": "${uploaded.s3_object_name}", "robot_id": "robot02" }`,
  ]);
  expect(upd.status).toBe(200);
  expect(JSON.parse(upd.body)).toMatchObject({ s3_object_name: uploaded.s3_object_name, robot_id: 'robot02' });

  const del = await curl(['-X', 'DELETE', `${sys.baseUrl}/file/delete?s3_bucket=files&s3_object_name=${uploaded.s3_object_name}`]);
  expect(del.status).toBe(200);
  const after = await curl(['-X', 'GET', `${sys.baseUrl}/file/list?s3_object_name=${uploaded.s3_object_name}`]);
  expect(JSON.parse(after.body)).toEqual([]);
  // Deleting the stored file does not touch what was deployed (as in the reference).
  expect(sha256File(target)).toBe(crypto.createHash('sha256').update(content).digest('hex'));
});

test('POST /file/deploy uploads and deploys in one call', async () => {
  fs.writeFileSync(path.join(work, 'both.bin'), crypto.randomBytes(200_000));
  const target = path.join(robot.root, 'deploy', 'nested', `both-${Date.now()}.bin`);
  const res = await curl([
    '-X', 'POST', `${sys.baseUrl}/file/deploy`,
    '-H', 'accept: application/json', '-H', 'Content-Type: multipart/form-data',
    '-F', `file_info_list={ "file_list": [ { "s3_bucket": "files", "robot_id": "${robot.id}", "deploy_path": "${target}" } ] }`,
    '-F', 'files=@both.bin',
  ]);
  expect(res.status).toBe(200);
  const [item] = JSON.parse(res.body) as Array<{ job_id: string; state: string }>;
  expect(item.state).toBe('PENDING');
  expect((await waitForJob(sys, item.job_id, ['COMPLETED', 'FAILED'], 10000)).status).toBe('COMPLETED');
  expect(sha256File(target)).toBe(sha256File(path.join(work, 'both.bin')));
});
