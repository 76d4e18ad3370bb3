// The daemon's HTTP/1.1 GET (common/http-get.ts) against raw sockets that answer byte by byte what a server may
// send: heads split across packets, chunked bodies with extensions and trailers, interim 1xx responses, bodies
// that end with the connection, redirects, cut transfers; and the socket pauses while the consumer is busy.
import crypto from 'node:crypto';
import net from 'node:net';
import { httpGet, type HttpResponse } from '../../common/http-get';

interface Served {
  url: string;
  requests: string[];
  close: () => Promise<void>;
}

/** A server that writes `respond(requestHead)`'s pieces one by one, with a pause between them. */
async function rawServer(respond: (head: string, n: number) => (Buffer | string)[], endAfter = true): Promise<Served> {
  const requests: string[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('error', () => undefined);
    let head = '';
    s.on('data', async (b: Buffer) => {
      head += b.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      requests.push(head);
      for (const piece of respond(head, requests.length)) {
        if (s.destroyed) return;
        s.write(piece);
        await new Promise((r) => setTimeout(r, 2));
      }
      if (endAfter) s.end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    requests,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

async function body(res: HttpResponse, sink?: (c: Buffer) => void | Promise<void>): Promise<Buffer> {
  const parts: Buffer[] = [];
  await res.pipe((c) => {
    parts.push(Buffer.from(c)); // chunks are views into a reused buffer: copy to keep
    return sink?.(c);
  });
  return Buffer.concat(parts);
}

const signal = () => new AbortController().signal;
let served: Served | null = null;
afterEach(async () => {
  await served?.close();
  served = null;
});

test('a Content-Length body after a head split mid-line, with the request line, Host and extra headers sent', async () => {
  const payload = crypto.randomBytes(300_000);
  served = await rawServer(() => ['HTTP/1.1 200 OK\r\nContent-Le', 'ngth: 300000\r\nETag: "abc"\r\nX-A: 1\r\nX-A: 2\r', '\n\r\n', payload.subarray(0, 7), payload.subarray(7)]);
  const res = await httpGet(`${served.url}/bucket/key?X-Amz-Signature=s`, { range: 'bytes=5-', 'if-range': '"abc"' }, signal());
  expect(res.status).toBe(200);
  expect(res.statusText).toBe('OK');
  expect(res.headers.get('ETag')).toBe('"abc"');
  expect(res.headers.get('x-a')).toBe('1, 2');
  expect(res.headers.get('missing')).toBeNull();
  expect((await body(res)).equals(payload)).toBe(true);
  expect(served.requests[0]).toMatch(/^GET \/bucket\/key\?X-Amz-Signature=s HTTP\/1\.1\r\n/);
  expect(served.requests[0]).toMatch(/\r\nHost: 127\.0\.0\.1:\d+\r\n/);
  expect(served.requests[0]).toMatch(/\r\nrange: bytes=5-\r\nif-range: "abc"\r\n/);
});

test('a chunked body with chunk extensions and trailers, after a 100 Continue, cut at awkward places', async () => {
  const a = crypto.randomBytes(70_000);
  const b = crypto.randomBytes(5);
  const stream = Buffer.concat([
    Buffer.from('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 206 Partial Content\r\nTransfer-Encoding: chunked\r\n\r\n'),
    Buffer.from(`${a.length.toString(16)};name=x\r\n`), a, Buffer.from('\r\n'),
    Buffer.from('5\r\n'), b, Buffer.from('\r\n'),
    Buffer.from('0\r\nX-Trailer: t\r\n\r\n'),
  ]);
  const cuts = [10, 30, 95, 96, 200, 70_100, 70_104, stream.length - 3];
  served = await rawServer(() => cuts.map((c, i) => stream.subarray(i === 0 ? 0 : cuts[i - 1], c)).concat([stream.subarray(cuts[cuts.length - 1])]), false);
  const res = await httpGet(served.url, {}, signal());
  expect(res.status).toBe(206);
  // The server keeps the connection open: the body ends at the last chunk, not at the close.
  expect((await body(res)).equals(Buffer.concat([a, b]))).toBe(true);
});

test('a body without length ends with the connection; a Content-Length body cut short is an error', async () => {
  served = await rawServer(() => ['HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n', 'hello ', 'world']);
  expect((await body(await httpGet(served.url, {}, signal()))).toString()).toBe('hello world');
  await served.close();
  served = await rawServer(() => ['HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n', 'only this']);
  const res = await httpGet(served.url, {}, signal());
  await expect(body(res)).rejects.toMatchObject({ code: 'ECONNRESET', message: expect.stringMatching(/before the end of the body/) });
});

test('redirects are followed (relative Location), at most 5 times', async () => {
  served = await rawServer((head) =>
    head.startsWith('GET /final ') ? ['HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'] : ['HTTP/1.1 307 Temporary Redirect\r\nLocation: /final\r\nContent-Length: 0\r\n\r\n'],
  );
  const res = await httpGet(`${served.url}/start`, {}, signal());
  expect((await body(res)).toString()).toBe('ok');
  expect(served.requests.map((r) => r.split(' ')[1])).toEqual(['/start', '/final']);
  await served.close();
  served = await rawServer(() => ['HTTP/1.1 302 Found\r\nLocation: /again\r\nContent-Length: 0\r\n\r\n']);
  await expect(httpGet(served.url, {}, signal())).rejects.toThrow(/too many redirects/);
  expect(served.requests).toHaveLength(6);
});

test('while the consumer is busy the socket is paused: the server cannot push the whole body into the daemon', async () => {
  const size = 64 << 20;
  const big = Buffer.alloc(size, 1);
  let written = 0;
  const server = net.createServer((s) => {
    s.on('error', () => undefined);
    s.once('data', () => {
      s.write(`HTTP/1.1 200 OK\r\nContent-Length: ${size}\r\n\r\n`);
      const pump = () => {
        while (written < size) {
          const n = Math.min(1 << 20, size - written);
          written += n;
          if (!s.write(big.subarray(written - n, written))) return void s.once('drain', pump);
        }
        s.end();
      };
      pump();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    const res = await httpGet(`http://127.0.0.1:${(server.address() as net.AddressInfo).port}`, {}, signal());
    let received = 0;
    let release: () => void = () => undefined;
    const blocked = new Promise<void>((r) => (release = r));
    const done = res.pipe((c) => {
      received += c.length;
      return received > 1 << 20 && received - c.length <= 1 << 20 ? blocked : undefined;
    });
    await new Promise((r) => setTimeout(r, 500));
    // Only socket buffers' worth is in flight (a few MB), not the 64 MiB the server wants to send.
    expect(written).toBeLessThan(24 << 20);
    const receivedWhileBlocked = received;
    expect(receivedWhileBlocked).toBeLessThan(2 << 20);
    release();
    await done;
    expect(received).toBe(size);
  } finally {
    await new Promise((r) => server.close(r));
  }
});

test('an abort ends a transfer with the abort reason; malformed responses are errors', async () => {
  served = await rawServer(() => ['HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n', 'x'.repeat(1000)], false);
  const ac = new AbortController();
  const res = await httpGet(served.url, {}, ac.signal);
  const p = body(res);
  ac.abort(new Error('stop now'));
  await expect(p).rejects.toThrow('stop now');
  await served.close();
  served = await rawServer(() => ['SMTP ready\r\n\r\n']);
  await expect(httpGet(served.url, {}, signal())).rejects.toMatchObject({ code: 'HPE_INVALID_STATUS' });
  await expect(httpGet('ftp://example.invalid/x', {}, signal())).rejects.toThrow(/unsupported url scheme/);
});
