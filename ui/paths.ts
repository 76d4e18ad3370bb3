// Where each browser app's build lives and whether it is stale. No Vite here: the API imports this module, and
// only the build script (ui/build.ts) loads the bundler.
import fs from 'node:fs';
import path from 'node:path';

/** Each app and the URL path it is served under. */
export const UI_APPS = { operator: '/ui/', specialist: '/' } as const;
export type UiApp = keyof typeof UI_APPS;

export const uiSourceDir = __dirname;
export const uiDistDir = (app: UiApp) => path.join(uiSourceDir, '..', 'dist', 'ui', app);

function newestMtime(dir: string): number {
  let newest = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    newest = Math.max(newest, e.isDirectory() ? newestMtime(p) : fs.statSync(p).mtimeMs);
  }
  return newest;
}

/** True when the app's build is missing or older than its sources (or the shared ones). */
export function uiBuildStale(app: UiApp): boolean {
  const index = path.join(uiDistDir(app), 'index.html');
  if (!fs.existsSync(index)) return true;
  const sources = Math.max(newestMtime(path.join(uiSourceDir, app)), newestMtime(path.join(uiSourceDir, 'shared')));
  return sources > fs.statSync(index).mtimeMs;
}
