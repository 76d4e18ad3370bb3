// The operator UI against the real running system (API, worker, bridge, a robot's daemon, real servers), driven in
// headless Chromium: sign in, upload, deploy, watch the job complete and the bytes land on the robot, cancel a job
// of an offline robot, see the robot's files; at desktop and tablet width, keyboard-reachable and labelled.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { cfg, sha256File, testRobots } from '../helpers';
import { startOtaSystem, type OtaSystem } from '../ota/system';
import { DESKTOP, TABLET, accessibilityViolations, launchBrowser, screenshot, unlabelledControls, type PageGlobals } from './browser';

let sys: OtaSystem;
let browser: Browser;
const [online, offline, second] = testRobots();

beforeAll(async () => {
  [sys, browser] = await Promise.all([startOtaSystem({ daemonsFor: [online] }), launchBrowser()]);
}, 180000);

afterAll(async () => {
  await browser?.close();
  await sys?.stop();
});

const uiUrl = () => sys.baseUrl.replace(/\/api\/v1$/, '/ui/');

async function signedIn(viewport = DESKTOP): Promise<Page> {
  const page = await browser.newPage({ viewport });
  await page.goto(uiUrl());
  await page.getByLabel('API token').fill(sys.token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Jobs' }).waitFor();
  return page;
}

test('a wrong token is refused with the API\'s reason and nothing else is shown', async () => {
  const page = await browser.newPage({ viewport: DESKTOP });
  await page.goto(uiUrl());
  await page.getByLabel('API token').fill('not-a-token');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('alert').filter({ hasText: 'Sign-in refused: Invalid token' }).waitFor();
  expect(await page.getByRole('table').count()).toBe(0);
  await screenshot(page, 'operator-login-refused');
  await page.close();
});

test('upload a file, deploy it to a robot, and watch the job complete; the bytes land on the robot', async () => {
  const page = await signedIn();
  const name = `ui-${crypto.randomBytes(4).toString('hex')}.bin`;
  const bytes = crypto.randomBytes(256 * 1024);
  const local = path.join(fs.mkdtempSync('/tmp/ui-upload-'), name);
  fs.writeFileSync(local, bytes);

  await page.getByRole('button', { name: 'Files & deploy' }).click();
  await page.getByLabel('File', { exact: true }).setInputFiles(local);
  await page.getByRole('button', { name: 'Upload', exact: true }).click();
  const uploaded = page.getByRole('status').filter({ hasText: `Uploaded ${name}` });
  await uploaded.waitFor();
  const objectName = /as (\S+) \(/.exec((await uploaded.textContent()) ?? '')![1];
  expect(objectName.startsWith(name.replace(/\.bin$/, ''))).toBe(true);

  await page.getByRole('button', { name: `Deploy ${objectName}` }).click();
  const target = path.join(online.root, 'ui', name);
  const deployForm = page.getByRole('region', { name: `Deploy ${name} to a robot` });
  await deployForm.getByLabel('Robot id').fill(online.id);
  await deployForm.getByLabel('Deploy path').fill(target);
  await deployForm.getByRole('button', { name: 'Deploy', exact: true }).click();

  // The deploy switches to the robot's jobs, which update live (no reload) until COMPLETED.
  await page.getByRole('heading', { name: 'Jobs' }).waitFor();
  const row = page.locator('tr[data-job-id]').filter({ hasText: target }).first();
  await row.waitFor();
  await page.locator('tr[data-status="COMPLETED"]').filter({ hasText: target }).waitFor({ timeout: 30000 });
  expect(sha256File(target)).toBe(crypto.createHash('sha256').update(bytes).digest('hex'));
  const jobId = await row.getAttribute('data-job-id');
  const state = (await sys.call(`/job_state/${jobId}`).then((r) => r.json())) as { status: string; workflow_id: string };
  expect(state.status).toBe('COMPLETED');
  // Its workflow (its batch's, api/ota/deploy-batcher.ts) is one click away in Temporal Web.
  expect(state.workflow_id).toMatch(/^ota-rollout-singles-/);
  expect(await row.getByRole('link', { name: `Workflow of job ${jobId} in Temporal Web` }).getAttribute('href')).toContain(
    `/workflows/${state.workflow_id}`,
  );
  await screenshot(page, 'operator-job-completed');

  await page.getByRole('button', { name: 'Robot files' }).click();
  await page.getByLabel('Robot id').fill(online.id);
  await page.getByRole('button', { name: 'Show files' }).click();
  await page.getByRole('table', { name: `Files deployed to ${online.id}` }).getByText(target).waitFor();
  await screenshot(page, 'operator-robot-files');
  await page.close();
});

test('cancel a job of an offline robot from the jobs table: CANCELED, and nothing is written', async () => {
  const page = await signedIn();
  const bytes = crypto.randomBytes(1024);
  const form = new FormData();
  form.append('file_info_list', JSON.stringify({ file_list: [{ s3_bucket: 'files' }] }));
  form.append('files', new Blob([bytes]), 'cancel-me.txt');
  const [{ s3_object_name }] = (await (await sys.call('/file/upload', { method: 'POST', body: form })).json()) as Array<{ s3_object_name: string }>;
  const target = path.join(offline.root, 'ui', `cancel-${crypto.randomBytes(3).toString('hex')}.txt`);
  const q = new URLSearchParams({ robot_id: offline.id, s3_object_name, deploy_path: target });
  const { job_id } = (await (await sys.call(`/file/deploy_from_s3?${q}`, { method: 'POST' })).json()) as { job_id: string };

  await page.getByLabel('Robot id').fill(offline.id);
  const row = page.locator(`tr[data-job-id="${job_id}"]`);
  await row.waitFor();
  await row.getByRole('button', { name: `Cancel job ${job_id}` }).click();
  await page.getByRole('status').filter({ hasText: `Cancel requested for job ${job_id}` }).waitFor();
  await page.locator(`tr[data-job-id="${job_id}"][data-status="CANCELED"]`).waitFor({ timeout: 20000 });
  expect(fs.existsSync(target)).toBe(false);
  await screenshot(page, 'operator-job-canceled');
  await page.close();
});

test('roll a file out to two robots in two waves and watch each wave complete; the bytes land on both', async () => {
  await sys.startDaemon(second);
  const page = await signedIn();
  const bytes = crypto.randomBytes(64 * 1024);
  const form = new FormData();
  form.append('file_info_list', JSON.stringify({ file_list: [{ s3_bucket: 'files' }] }));
  form.append('files', new Blob([bytes]), 'rollout.bin');
  const [{ s3_object_name }] = (await (await sys.call('/file/upload', { method: 'POST', body: form })).json()) as Array<{ s3_object_name: string }>;
  const name = `rollout-${crypto.randomBytes(3).toString('hex')}.bin`;
  const pathFor = (r: typeof online) => path.join(r.root, 'ui', name);

  await page.getByRole('button', { name: 'Rollouts', exact: true }).click();
  const form$ = page.getByRole('region', { name: 'New rollout' });
  await form$.getByLabel('File').selectOption(s3_object_name);
  await form$.getByLabel('Deploy path').fill(pathFor(online).replace(online.id, '{robot_id}'));
  await form$.getByLabel('Robot ids').fill(`${online.id}, ${second.id}`);
  await form$.getByLabel('Waves (% of robots)').fill('50, 100');
  await form$.getByLabel('Success threshold (%)').fill('100');
  await form$.getByRole('button', { name: 'Start rollout' }).click();

  const detail = page.locator('section[data-rollout-id]');
  await detail.waitFor();
  const rolloutId = await detail.getAttribute('data-rollout-id');
  await page.locator(`section[data-rollout-id="${rolloutId}"][data-status="COMPLETED"]`).waitFor({ timeout: 60000 });
  for (const wave of [1, 2]) expect(await detail.getByRole('progressbar', { name: `Wave ${wave} completed` }).getAttribute('aria-valuenow')).toBe('100');
  const sha = crypto.createHash('sha256').update(bytes).digest('hex');
  for (const r of [online, second]) expect(sha256File(pathFor(r))).toBe(sha);
  await page.locator(`tr[data-rollout-id="${rolloutId}"][data-status="COMPLETED"]`).waitFor();
  await screenshot(page, 'operator-rollout-completed');
  await page.close();
});

test('an admin provisions a robot, downloads its daemon config (no cloud secret in it), and removes it', async () => {
  const page = await signedIn();
  const id = `ui-robot-${crypto.randomBytes(3).toString('hex')}`;
  await page.getByRole('button', { name: 'Robot registry' }).click();
  await page.getByLabel('New robot id').fill(id);
  await page.getByLabel('Deploy roots').fill(`/tmp/${id}`);
  await page.getByRole('button', { name: 'Provision' }).click();
  await page.locator(`tr[data-robot-id="${id}"]`).waitFor();
  const [file] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: `Download daemon config of ${id}` }).click()]);
  expect(file.suggestedFilename()).toBe(`${id}-ota-config.yaml`);
  const config = fs.readFileSync(await file.path(), 'utf8');
  expect(config).toContain(id);
  expect(config).toMatch(/signing_public_keys:/);
  expect(config).not.toContain(cfg.s3.secretAccessKey);
  expect(((await sys.db.models.Robot.findById(id).lean()) as { deploy_roots: string[] } | null)?.deploy_roots).toEqual([`/tmp/${id}`]);
  await screenshot(page, 'operator-robot-provisioned');

  await page.getByRole('button', { name: `Remove ${id}` }).click();
  await page.getByRole('status').filter({ hasText: `Removed ${id}` }).waitFor();
  await page.locator(`tr[data-robot-id="${id}"]`).waitFor({ state: 'detached' });
  expect(await sys.db.models.Robot.findById(id).lean()).toBeNull();
  await page.close();
});

test.each([
  ['desktop', DESKTOP],
  ['tablet', TABLET],
])('every view passes the accessibility check and is usable by keyboard at %s width', async (label, viewport) => {
  const page = await signedIn(viewport);
  for (const view of ['Jobs', 'Files & deploy', 'Rollouts', 'Robot files', 'Robot registry']) {
    await page.getByRole('button', { name: view, exact: true }).click();
    await page.getByRole('heading', { name: view, exact: true }).waitFor();
    expect(await accessibilityViolations(page)).toEqual([]);
    expect(await unlabelledControls(page)).toEqual([]);
    // Nothing wider than the viewport: no horizontal scrolling of the page itself.
    expect(await page.evaluate(() => (globalThis as unknown as PageGlobals).document.documentElement.scrollWidth)).toBeLessThanOrEqual(viewport.width);
    await screenshot(page, `operator-${label}-${view.replace(/\W+/g, '-').toLowerCase()}`);
  }
  // Keyboard: Tab reaches the section buttons and Enter opens one.
  await page.getByRole('button', { name: 'Jobs' }).focus();
  await page.keyboard.press('Tab');
  expect(await page.evaluate(() => (globalThis as unknown as PageGlobals).document.activeElement?.textContent)).toBe('Files & deploy');
  await page.keyboard.press('Enter');
  await page.getByRole('heading', { name: 'Files & deploy' }).waitFor();
  await page.close();
});
