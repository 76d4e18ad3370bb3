// Error answers and logs: unknown errors become a bare JSON 500 (stack only in the log), HttpErrors keep their
// status, detail and headers, and nothing the app logs for a request contains the bearer token.
import express from 'express';
import type http from 'node:http';
import { Writable } from 'node:stream';
import pino from 'pino';
import { errorHandler, HttpError, notFoundHandler } from '../../api/ota/errors';
import { closeServer, listen, serverPort } from '../../api/server';
import { request, startHarness } from './harness';

function capture(): { log: pino.Logger; lines: string[] } {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString());
      cb();
    },
  });
  return { log: pino({ level: 'trace' }, sink), lines };
}

describe('errorHandler', () => {
  let server: http.Server;
  let base: string;
  const { log, lines } = capture();
  beforeAll(async () => {
    const app = express();
    app.get('/boom', () => {
      throw new Error('database password=hunter2 exploded');
    });
    app.get('/teapot', () => {
      throw new HttpError(418, 'short and stout', { 'Retry-After': '5' });
    });
    app.post('/json', express.json(), (_req, res) => {
      res.json({});
    });
    app.use(notFoundHandler);
    app.use(errorHandler(log));
    server = await listen(app, 0, '127.0.0.1');
    base = `http://127.0.0.1:${serverPort(server)}`;
  });
  afterAll(async () => {
    await closeServer(server, 1000);
  });

  it('answers an unknown error with a bare JSON 500 and logs the stack', async () => {
    const res = await fetch(`${base}/boom`);
    expect(res.status).toBe(500);
    expect(await res.text()).toBe('{"detail":"Internal Server Error"}');
    expect(lines.join('')).toContain('database password=hunter2 exploded');
  });

  it('keeps status, detail and headers of an HttpError', async () => {
    const res = await fetch(`${base}/teapot`);
    expect(res.status).toBe(418);
    expect(res.headers.get('retry-after')).toBe('5');
    expect(await res.json()).toEqual({ detail: 'short and stout' });
  });

  it('answers malformed JSON with 400 and unknown routes with a JSON 404', async () => {
    const bad = await fetch(`${base}/json`, { method: 'POST', body: '{nope', headers: { 'content-type': 'application/json' } });
    expect(bad.status).toBe(400);
    expect(await bad.json()).toEqual({ detail: 'body: invalid JSON' });
    const nf = await fetch(`${base}/elsewhere`);
    expect(nf.status).toBe(404);
    expect(await nf.json()).toEqual({ detail: 'Not Found' });
  });
});

describe('request logs of the OTA app', () => {
  it('never contain the bearer token', async () => {
    const { log, lines } = capture();
    const h = await startHarness({ log });
    try {
      expect((await request(h, 'GET', '/file/list')).status).toBe(200);
      expect((await request(h, 'GET', '/job_state/unknown')).status).toBe(404);
      expect((await request(h, 'GET', '/file/list', { auth: false, headers: { authorization: `Bearer ${h.token}x` } })).status).toBe(401);
      const all = lines.join('');
      expect(all).toContain('"path":"/api/v1/file/list"');
      expect(all).toContain('"sub":"api-test"');
      expect(all).not.toContain(h.token.split('.')[2]);
      expect(all.toLowerCase()).not.toContain('bearer');
    } finally {
      await h.close();
    }
  });
});
