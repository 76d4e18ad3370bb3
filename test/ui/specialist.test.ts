// The specialist UI of the offline app against the real system (cloud API, offline API and worker as processes,
// real sshd robots, Temporal, FerretDB, versitygw), in headless Chromium: connect the robots, press Synchronize
// and see RFs land in the center's cache, press Update Robots and see them land on the robots, and the
// "outdated app" message when the cloud says so.
import crypto from 'node:crypto';
import fs from 'node:fs';
import type { Browser, Page } from 'playwright-core';
import { OFFLINE_APP_VERSION } from '../../activities/http/cloud-sync';
import { runTs, testRobots, type ChildHandle } from '../helpers';
import { cacheContents, createCenter, startCloud, type Center, type CloudSide } from '../cloud-sync/system';
import { freePort } from '../ota/system';
import { DESKTOP, TABLET, accessibilityViolations, launchBrowser, screenshot, unlabelledControls, type PageGlobals } from './browser';

let cloud: CloudSide;
let center: Center;
let offlineApi: ChildHandle;
let baseUrl: string;
let browser: Browser;
const robots = testRobots().slice(0, 2);

beforeAll(async () => {
  [cloud, browser] = await Promise.all([startCloud(), launchBrowser()]);
  center = await createCenter(cloud, { robots, connected: false });
  const port = await freePort();
  baseUrl = `http://127.0.0.1:${port}`;
  offlineApi = runTs('api/offline/main.ts', { ...center.env, OFFLINE_API_PORT: String(port) });
  await Promise.all([center.startWorker(), offlineApi.waitForOutput('offline API listening', 60000)]);
}, 180000);

afterAll(async () => {
  await browser?.close();
  await offlineApi?.kill();
  await center?.close();
  await cloud?.close();
});

async function open(viewport = DESKTOP): Promise<Page> {
  const page = await browser.newPage({ viewport });
  await page.goto(`${baseUrl}/`);
  await page.getByRole('heading', { name: 'Robots' }).waitFor();
  return page;
}

const sha256 = (file: string) => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');

test('connect the robots, Synchronize, then Update Robots: the RFs land in the cache, then on the robots', async () => {
  const page = await open();
  for (const r of robots) {
    const row = page.locator(`tr[data-robot-id="${r.id}"]`);
    await row.getByRole('button', { name: `Connect ${r.id}` }).click();
    await page.locator(`tr[data-robot-id="${r.id}"][data-connected="true"]`).waitFor({ timeout: 20000 });
  }
  await screenshot(page, 'specialist-robots-connected');

  await page.getByRole('button', { name: 'Synchronize' }).click();
  await page.getByRole('heading', { name: 'Cloud sync' }).waitFor();
  const cloudRun = page.getByRole('region', { name: 'Latest cloud sync' });
  await page.locator('[aria-label="Latest cloud sync"][data-outcome="synced"]').waitFor({ timeout: 90000 });
  await cloudRun.getByText('Synchronized.').waitFor();
  const summary = await cloudRun.getByRole('list', { name: 'Cloud sync result' }).textContent();
  const stored = await center.db.models.PerfectStateEntry.find({ robot_id: { $in: robots.map((r) => r.id) } }).lean();
  const distinct = new Set(stored.map((e) => e.sha256));
  expect(distinct.size).toBeGreaterThan(0);
  expect(summary).toContain(`Robot files: ${distinct.size} downloaded`);
  expect(cacheContents(center).rfs).toEqual([...distinct].sort());
  await screenshot(page, 'specialist-cloud-sync-done');

  await page.getByRole('button', { name: 'Update Robots' }).click();
  await page.getByRole('heading', { name: 'Robot sync' }).waitFor();
  for (const r of robots) await page.locator(`section[data-robot-id="${r.id}"][data-status="synced"]`).waitFor({ timeout: 90000 });
  const totals = await page.getByLabel('Robot sync totals').textContent();
  expect(totals).toContain(`Uploaded ${stored.length} files`);
  // Every RF of each robot's perfect state is on that robot, with its bytes.
  for (const e of stored) expect(sha256(e.path)).toBe(e.sha256);
  // Each run is one click away in Temporal Web.
  expect(await page.getByRole('link', { name: 'This run in Temporal Web' }).getAttribute('href')).toContain('/namespaces/center/workflows/robot-sync-');
  await screenshot(page, 'specialist-robot-sync-done');

  // The robots page shows the outcome of the last sync.
  await page.getByRole('button', { name: 'Robots', exact: true }).click();
  for (const r of robots) await page.locator(`tr[data-robot-id="${r.id}"]`).getByText('synced').waitFor();
  await page.close();
});

test('an outdated app shows "please update" and applies nothing', async () => {
  await cloud.db.cloudSync.VersionMap.updateOne({ _id: OFFLINE_APP_VERSION }, { $set: { compatible: false } });
  try {
    const page = await open();
    await page.getByRole('button', { name: 'Synchronize' }).click();
    await page.locator('[aria-label="Latest cloud sync"][data-outcome="outdated_app"]').waitFor({ timeout: 60000 });
    await page.getByRole('alert').filter({ hasText: 'This app is outdated: please update it' }).waitFor();
    await screenshot(page, 'specialist-outdated-app');
    await page.close();
  } finally {
    await cloud.db.cloudSync.VersionMap.updateOne({ _id: OFFLINE_APP_VERSION }, { $set: { compatible: true } });
  }
});

test.each([
  ['desktop', DESKTOP],
  ['tablet', TABLET],
])('every view passes the accessibility check and is usable by keyboard at %s width', async (label, viewport) => {
  const page = await open(viewport);
  for (const view of ['Robots', 'Cloud sync', 'Robot sync']) {
    await page.getByRole('button', { name: view, exact: true }).click();
    await page.getByRole('heading', { name: view }).waitFor();
    expect(await accessibilityViolations(page)).toEqual([]);
    expect(await unlabelledControls(page)).toEqual([]);
    expect(await page.evaluate(() => (globalThis as unknown as PageGlobals).document.documentElement.scrollWidth)).toBeLessThanOrEqual(viewport.width);
    await screenshot(page, `specialist-${label}-${view.replace(/\W+/g, '-').toLowerCase()}`);
  }
  await page.getByRole('button', { name: 'Synchronize' }).focus();
  await page.keyboard.press('Tab');
  expect(await page.evaluate(() => (globalThis as unknown as PageGlobals).document.activeElement?.textContent)).toBe('Update Robots');
  await page.close();
});
