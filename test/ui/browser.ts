// Browser tests drive Debian's Chromium (installed by infra/install.sh) through playwright-core: headless, no
// sandbox (root in CI), and none of Chromium's background network traffic (this machine's network is closed).
// Screenshots go to artifacts/ui/, kept by CI as the tests' artifacts.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { repoRoot } from '../../common/config';

export const CHROMIUM = '/usr/lib/chromium/chromium';
export const ARTIFACTS = path.join(repoRoot, 'artifacts', 'ui');
export const DESKTOP = { width: 1280, height: 800 };
export const TABLET = { width: 768, height: 1024 };

export async function launchBrowser(): Promise<Browser> {
  // The build runs in its own process: Vite is ES-module only, which jest's CommonJS runtime cannot load.
  execFileSync(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'ui', 'build.ts'), '--if-stale'], { cwd: repoRoot, stdio: 'inherit' });
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

export async function screenshot(page: Page, name: string): Promise<string> {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

// Callbacks given to page.evaluate run in the browser. The test project compiles without the DOM library, so they
// reach the page through globalThis and these few declared shapes (the casts vanish when compiled).
export interface PageElement {
  getAttribute(name: string): string | null;
  textContent: string | null;
  outerHTML: string;
  labels?: { length: number } | null;
}
export interface PageGlobals {
  document: { querySelectorAll(selector: string): ArrayLike<PageElement>; activeElement: PageElement | null; documentElement: { scrollWidth: number } };
  axe: { run(ctx: unknown, opts: object): Promise<{ violations: Array<{ id: string; impact: string | null; help: string; nodes: unknown[] }> }> };
}

export interface AxeViolation {
  id: string;
  impact: string | null;
  help: string;
  nodes: number;
}

/** Runs axe-core in the page (WCAG 2 A/AA rules) and returns the serious and critical violations. */
export async function accessibilityViolations(page: Page): Promise<AxeViolation[]> {
  await page.addScriptTag({ path: require.resolve('axe-core/axe.min.js') });
  const result = await page.evaluate(async () => {
    const g = globalThis as unknown as PageGlobals;
    const r = await g.axe.run(g.document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa'] } });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.length }));
  });
  return result.filter((v) => v.impact === 'serious' || v.impact === 'critical');
}

/** Every button and link in the page that has no accessible name (text, aria-label or title). */
export async function unlabelledControls(page: Page): Promise<string[]> {
  return page.evaluate(() =>
    Array.from((globalThis as unknown as PageGlobals).document.querySelectorAll('button, a[href], input, select'))
      .filter((el) => {
        const label = el.getAttribute('aria-label') || el.textContent?.trim() || el.getAttribute('title');
        return !label && !(el.labels && el.labels.length > 0);
      })
      .map((el) => el.outerHTML.slice(0, 120)),
  );
}
