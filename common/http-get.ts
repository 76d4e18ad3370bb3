// A streaming HTTP/1.1 GET for the daemon's downloads, on a bare TCP/TLS socket that reads into one fixed buffer
// (the `onread` option of net/tls.connect). node:http hands out a fresh 64 KiB buffer per socket read, and those
// only go away at the next GC: installing 1 GiB piled up tens of MB of dead chunks on the robot. Here every read
// lands in the same 256 KiB buffer, the body is passed on as views into it, and the socket is paused while the
// consumer is busy (a slow disk slows the download, TCP back-pressure, instead of growing memory).
// Handles what a presigned S3 URL needs: Content-Length and chunked bodies, 1xx interim responses, redirects.
import net from 'node:net';

export interface HttpResponse {
  status: number;
  statusText: string;
  headers: { get(name: string): string | null };
  /**
   * Streams the body to `sink`, resolving at its end. Each chunk is a view into a reused buffer, valid until the
   * sink returns, or until the promise it returns settles (the socket stays paused meanwhile). Call once.
   */
  pipe(sink: (chunk: Buffer) => void | Promise<void>): Promise<void>;
  /** Drops the response (and its connection). */
  cancel(): void;
}

export class HttpGetError extends Error {
  override name = 'HttpGetError';
  constructor(
    message: string,
    readonly code: string | undefined,
  ) {
    super(message);
  }
}

const MAX_REDIRECTS = 5;
const READ_BUFFER_BYTES = 256 * 1024;
const MAX_HEAD_BYTES = 64 * 1024;
/** A connection that neither sends nor accepts a byte for this long is dead (the caller retries and resumes). */
const IDLE_TIMEOUT_MS = 60_000;

export async function httpGet(url: string, headers: Record<string, string>, signal: AbortSignal): Promise<HttpResponse> {
  for (let redirects = 0; ; redirects++) {
    const res = await request(new URL(url), headers, signal);
    const location = res.headers.get('location');
    if (![301, 302, 303, 307, 308].includes(res.status) || !location) return res;
    res.cancel();
    if (redirects >= MAX_REDIRECTS) throw new HttpGetError('too many redirects', undefined);
    url = new URL(location, url).toString();
  }
}

interface Head {
  status: number;
  statusText: string;
  fields: Map<string, string>;
}

function parseHead(text: string): Head {
  const [statusLine, ...lines] = text.split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(statusLine);
  if (!m) throw new HttpGetError('malformed HTTP status line', 'HPE_INVALID_STATUS');
  const fields = new Map<string, string>();
  for (const line of lines) {
    const colon = line.indexOf(':');
    if (colon <= 0) throw new HttpGetError('malformed HTTP header line', 'HPE_INVALID_HEADER_TOKEN');
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    const prev = fields.get(name);
    fields.set(name, prev === undefined ? value : `${prev}, ${value}`);
  }
  return { status: Number(m[1]), statusText: m[2] ?? '', fields };
}

/**
 * Body framing (RFC 9112 §6): a known length, chunked, or until the server closes. `next` takes bytes off the
 * front of `input` and returns the body bytes among them (possibly none), or null once the body is complete.
 */
class BodyDecoder {
  private remaining: number; // bytes left in the body (length) or in the current chunk (chunked)
  private phase: 'data' | 'size' | 'data-crlf' | 'trailers' | 'done';
  private line = '';

  constructor(
    private readonly kind: 'length' | 'chunked' | 'eof',
    length = 0,
  ) {
    this.remaining = length;
    this.phase = kind === 'chunked' ? 'size' : kind === 'length' && length === 0 ? 'done' : 'data';
  }

  get done(): boolean {
    return this.phase === 'done';
  }

  /** The server closed the connection: true if that completes the body. */
  eof(): boolean {
    if (this.kind === 'eof') this.phase = 'done';
    return this.done;
  }

  /** Consumes from `input.at`; returns a body slice (possibly empty) and advances `input.at`. */
  next(input: { buf: Buffer; at: number }): Buffer {
    const { buf } = input;
    while (input.at < buf.length && this.phase !== 'done') {
      if (this.phase === 'data') {
        const n = this.kind === 'eof' ? buf.length - input.at : Math.min(this.remaining, buf.length - input.at);
        const out = buf.subarray(input.at, input.at + n);
        input.at += n;
        this.remaining -= n;
        if (this.kind === 'length' && this.remaining === 0) this.phase = 'done';
        else if (this.kind === 'chunked' && this.remaining === 0) this.phase = 'data-crlf';
        return out;
      }
      // Line-oriented parts of chunked framing: size lines, the CRLF after each chunk, trailers.
      const byte = buf[input.at++];
      if (byte !== 0x0a) {
        if (this.line.length > 1024) throw new HttpGetError('malformed chunked body', 'HPE_INVALID_CHUNK_SIZE');
        this.line += String.fromCharCode(byte);
        continue;
      }
      const line = this.line.replace(/\r$/, '');
      this.line = '';
      if (this.phase === 'data-crlf') {
        if (line !== '') throw new HttpGetError('malformed chunked body', 'HPE_INVALID_CHUNK_SIZE');
        this.phase = 'size';
      } else if (this.phase === 'size') {
        const size = /^([0-9a-fA-F]{1,12})(?:;.*)?$/.exec(line.trim());
        if (!size) throw new HttpGetError('malformed chunk size', 'HPE_INVALID_CHUNK_SIZE');
        this.remaining = parseInt(size[1], 16);
        this.phase = this.remaining === 0 ? 'trailers' : 'data';
      } else if (line === '') {
        this.phase = 'done'; // end of trailers
      }
    }
    return buf.subarray(input.at, input.at);
  }
}

function request(target: URL, extra: Record<string, string>, signal: AbortSignal): Promise<HttpResponse> {
  if (target.protocol !== 'http:' && target.protocol !== 'https:') {
    return Promise.reject(new HttpGetError(`unsupported url scheme ${target.protocol}`, undefined));
  }
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const tlsOn = target.protocol === 'https:';
    const host = target.hostname.replace(/^\[|\]$/g, '');
    const port = Number(target.port) || (tlsOn ? 443 : 80);
    const buffer = Buffer.allocUnsafe(READ_BUFFER_BYTES);

    let head: Buffer[] = [];
    let headBytes = 0;
    let decoder: BodyDecoder | null = null;
    let input: { buf: Buffer; at: number } = { buf: Buffer.alloc(0), at: 0 }; // the unprocessed rest of the last read (a view into `buffer`)
    let sink: ((chunk: Buffer) => void | Promise<void>) | null = null;
    let finish: { resolve: () => void; reject: (e: unknown) => void } | null = null;
    let settled = false;
    let failed: unknown = null;

    const fail = (e: unknown) => {
      if (failed) return;
      failed = e;
      socket.destroy();
      signal.removeEventListener('abort', onAbort);
      if (!settled) {
        settled = true;
        reject(e);
      }
      finish?.reject(e);
    };
    const onAbort = () => fail(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });

    let completed = false;
    const complete = () => {
      if (completed) return;
      completed = true;
      signal.removeEventListener('abort', onAbort);
      socket.destroy(); // `Connection: close`: one request per connection, no pool to hold memory
      finish?.resolve();
    };

    const onHead = (text: string): boolean => {
      const h = parseHead(text);
      if (h.status >= 100 && h.status < 200) return false; // interim response: the real one follows
      const te = h.fields.get('transfer-encoding');
      const cl = h.fields.get('content-length');
      if (h.status === 204 || h.status === 304) decoder = new BodyDecoder('length', 0);
      else if (te && /(^|,)\s*chunked\s*$/i.test(te)) decoder = new BodyDecoder('chunked');
      else if (cl !== undefined) {
        if (!/^\d+$/.test(cl)) throw new HttpGetError('malformed Content-Length', 'HPE_INVALID_CONTENT_LENGTH');
        decoder = new BodyDecoder('length', Number(cl));
      } else decoder = new BodyDecoder('eof');
      settled = true;
      resolve({
        status: h.status,
        statusText: h.statusText,
        headers: { get: (name) => h.fields.get(name.toLowerCase()) ?? null },
        pipe: (s) => {
          if (sink) return Promise.reject(new Error('body already consumed'));
          sink = s;
          const done = new Promise<void>((res, rej) => (finish = { resolve: res, reject: rej }));
          if (failed) return Promise.reject(failed);
          if (decoder?.done) complete();
          else if (pump()) socket.resume();
          return done;
        },
        cancel: () => fail(new HttpGetError('response cancelled', 'ECANCELED')),
      });
      return true;
    };

    /** Processes `input`; false when it must wait (no sink yet, or the sink is busy): the socket stays paused. */
    const pump = (): boolean => {
      try {
        while (input.at < input.buf.length || decoder?.done) {
          if (!decoder) {
            // Collect the head up to the blank line (copied: it is small and outlives this read).
            const rest = input.buf.subarray(input.at);
            const joined = head.length ? Buffer.concat([...head, rest]) : rest;
            const end = joined.indexOf('\r\n\r\n', Math.max(0, headBytes - 3));
            if (end < 0) {
              if (joined.length > MAX_HEAD_BYTES) throw new HttpGetError('HTTP response head too large', 'HPE_HEADER_OVERFLOW');
              head = [Buffer.from(joined)];
              headBytes = joined.length;
              input.at = input.buf.length;
              continue;
            }
            const used = end + 4 - headBytes; // bytes of `rest` that belong to the head
            input.at += used;
            const text = joined.subarray(0, end).toString('latin1');
            head = [];
            headBytes = 0;
            onHead(text);
            continue;
          }
          if (decoder.done) {
            if (sink) complete();
            return false;
          }
          if (!sink) return false;
          const chunk = decoder.next(input);
          if (chunk.length === 0) continue;
          const wait = sink(chunk);
          if (wait) {
            wait.then(
              () => {
                if (!failed && pump()) socket.resume();
              },
              (e: unknown) => fail(e),
            );
            return false;
          }
        }
        return true;
      } catch (e) {
        fail(e);
        return false;
      }
    };

    const onread = {
      buffer,
      callback: (n: number, buf: Buffer): boolean => {
        input = { buf: buf.subarray(0, n), at: 0 };
        return pump();
      },
    };
    let socket: net.Socket;
    if (tlsOn) {
      const tls = require('node:tls') as typeof import('node:tls');
      // tls.connect takes `onread` like net.connect (Node docs), though @types/node omits it there.
      const options: import('node:tls').ConnectionOptions & { onread: net.OnReadOpts } = { host, port, servername: net.isIP(host) ? undefined : host, onread };
      socket = tls.connect(options);
    } else {
      socket = net.connect({ host, port, onread });
    }
    socket.setTimeout(IDLE_TIMEOUT_MS, () => fail(new HttpGetError('connection idle for too long', 'ETIMEDOUT')));
    socket.on('error', (e: NodeJS.ErrnoException) => fail(new HttpGetError(e.message, e.code)));
    socket.on('end', () => {
      // The server closed: the end of an until-close body, otherwise a cut transfer.
      if (decoder?.eof()) {
        if (sink) complete();
        return;
      }
      if (!decoder?.done) fail(new HttpGetError(decoder ? 'connection closed before the end of the body' : 'connection closed before a response', 'ECONNRESET'));
    });
    const path = `${target.pathname || '/'}${target.search}`;
    const lines = [`GET ${path} HTTP/1.1`, `Host: ${target.host}`, 'Connection: close', 'User-Agent: fleetsync-ota-daemon'];
    for (const [k, v] of Object.entries(extra)) {
      if (/[\r\n]/.test(k + v)) return fail(new HttpGetError(`header ${k} holds a line break`, 'ERR_INVALID_CHAR'));
      lines.push(`${k}: ${v}`);
    }
    socket.write(`${lines.join('\r\n')}\r\n\r\n`);
  });
}
