// Builds the browser apps with Vite: the operator UI (served by the cloud API under /ui/) and the specialist UI
// (served by the offline app at /). `npm run build:ui [-- --if-stale]`; `npm start` and the browser tests run it
// with --if-stale, so a source newer than the last build is rebuilt.
import fs from 'node:fs';
import path from 'node:path';
import { build } from 'vite';
import { UI_APPS, uiBuildStale, uiDistDir, uiSourceDir, type UiApp } from './paths';

export async function buildUi(apps: UiApp[], onlyStale: boolean): Promise<UiApp[]> {
  const todo = apps.filter((a) => fs.existsSync(path.join(uiSourceDir, a)) && (!onlyStale || uiBuildStale(a)));
  for (const app of todo) {
    await build({
      root: path.join(uiSourceDir, app),
      base: UI_APPS[app],
      logLevel: 'warn',
      // React's JSX without @vitejs/plugin-react: esbuild's automatic runtime is all a production build needs.
      esbuild: { jsx: 'automatic' },
      build: { outDir: uiDistDir(app), emptyOutDir: true, sourcemap: true, target: 'es2022' },
    });
  }
  return todo;
}

buildUi(Object.keys(UI_APPS) as UiApp[], process.argv.includes('--if-stale')).then(
  (built) => {
    console.log(built.length ? `built ui: ${built.join(', ')}` : 'ui up to date');
    process.exit(0);
  },
  (e: unknown) => {
    console.error(e);
    process.exit(1);
  },
);
