// Serves a built browser app (ui/build.ts) and its config.json. The app's files are public; everything it shows
// comes from the API behind the usual authentication. A missing build answers 503 with the command that makes it.
import fs from 'node:fs';
import path from 'node:path';
import express, { Router } from 'express';
import { uiDistDir, type UiApp } from '../ui/paths';

export function uiRouter(app: UiApp, config: () => Record<string, unknown>): Router {
  const dist = uiDistDir(app);
  const r = Router();
  r.get('/config.json', (_req, res) => {
    res.set('cache-control', 'no-store').json(config());
  });
  // Hashed asset names: cache them; index.html always revalidates so a new build shows at once.
  r.use(express.static(dist, { index: false, maxAge: '1h', immutable: true }));
  r.get(/.*/, (_req, res) => {
    const index = path.join(dist, 'index.html');
    if (!fs.existsSync(index)) {
      res.status(503).type('text/plain').send(`The ${app} UI is not built: run npm run build:ui\n`);
      return;
    }
    res.set('cache-control', 'no-cache').sendFile(index);
  });
  return r;
}
