// A tiny HTTP object server for the daemon's unit tests: strong ETags, Range and If-Range like S3, a count of
// body bytes actually sent, and a switch to cut the connection after N bytes (a dropped network).
import crypto from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FixtureObject {
  body: Buffer;
  etag: string;
}

export interface ObjectServer {
  url: (name: string) => string;
  put: (name: string, body: Buffer, etag?: string) => FixtureObject;
  /** Body bytes written to sockets since start (or the last reset). */
  bytesSent: () => number;
  requests: () => { name: string; range: string | undefined; ifRange: string | undefined; status: number }[];
  reset: () => void;
  /** The next responses are cut after this many body bytes (null: never). */
  cutAfter: (bytes: number | null) => void;
  /** Responses stop sending after this many body bytes until `release()` (a stalled transfer). */
  holdAfter: (bytes: number | null) => void;
  release: () => void;
  /** When true, Range headers are ignored (a server without range support). */
  ignoreRanges: (on: boolean) => void;
  close: () => Promise<void>;
}

export const sha256 = (b: Buffer) => crypto.createHash('sha256').update(b).digest('hex');

export async function startObjectServer(): Promise<ObjectServer> {
  const objects = new Map<string, FixtureObject>();
  let sent = 0;
  // Responses started before the last reset() (e.g. one released after its client left) no longer count.
  let generation = 0;
  let cut: number | null = null;
  let noRanges = false;
  let hold: number | null = null;
  let held: (() => void)[] = [];
  let log: ReturnType<ObjectServer['requests']> = [];

  const server = http.createServer((req, res) => {
    const name = decodeURIComponent((req.url ?? '/').split('?')[0].slice(1));
    const obj = objects.get(name);
    const range = req.headers.range;
    const ifRange = req.headers['if-range'] as string | undefined;
    const record = (status: number) => log.push({ name, range, ifRange, status });
    if (!obj) {
      record(404);
      res.writeHead(404).end();
      return;
    }
    const total = obj.body.length;
    let start = 0;
    let status = 200;
    const m = range && !noRanges ? /^bytes=(\d+)-$/.exec(range) : null;
    if (m && (!ifRange || ifRange === obj.etag)) {
      start = Number(m[1]);
      if (start >= total) {
        record(416);
        res.writeHead(416, { 'content-range': `bytes */${total}`, etag: obj.etag }).end();
        return;
      }
      status = 206;
    }
    const body = obj.body.subarray(start);
    const headers: http.OutgoingHttpHeaders = { etag: obj.etag, 'content-length': body.length, 'accept-ranges': 'bytes' };
    if (status === 206) headers['content-range'] = `bytes ${start}-${total - 1}/${total}`;
    record(status);
    res.writeHead(status, headers);
    const limit = cut;
    const born = generation;
    let offset = 0;
    const step = 64 * 1024;
    const pump = () => {
      while (offset < body.length) {
        if (hold !== null && offset >= hold) {
          held.push(pump);
          return;
        }
        let end = Math.min(body.length, offset + step);
        if (hold !== null && end > hold) end = hold;
        if (limit !== null && end > limit) end = limit;
        if (end <= offset) {
          res.socket?.destroy();
          return;
        }
        const chunk = body.subarray(offset, end);
        offset = end;
        if (born === generation) sent += chunk.length;
        if (!res.write(chunk)) {
          res.once('drain', pump);
          return;
        }
      }
      res.end();
    };
    pump();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;

  return {
    url: (name) => `http://127.0.0.1:${port}/${encodeURIComponent(name)}?X-Amz-Signature=secret`,
    put: (name, body, etag = `"${sha256(body).slice(0, 32)}"`) => {
      const obj = { body, etag };
      objects.set(name, obj);
      return obj;
    },
    bytesSent: () => sent,
    requests: () => log,
    reset: () => {
      sent = 0;
      generation++;
      log = [];
    },
    cutAfter: (bytes) => (cut = bytes),
    holdAfter: (bytes) => (hold = bytes),
    release: () => {
      hold = null;
      const waiting = held;
      held = [];
      for (const resume of waiting) resume();
    },
    ignoreRanges: (on) => (noRanges = on),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
