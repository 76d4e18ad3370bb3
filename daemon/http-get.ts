// A streaming HTTP(S) GET on node:http, for the daemon's downloads. fetch() would load undici and WHATWG streams
// (several MB of RSS on the robot) and hands out small chunks through promise-heavy streams; here the socket is
// read in large chunks, and a body that is not consumed is not read (TCP back-pressure).
import http from 'node:http';
import https from 'node:https';

export interface HttpResponse {
  status: number;
  statusText: string;
  headers: { get(name: string): string | null };
  body: AsyncIterable<Buffer>;
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

export function httpGet(url: string, headers: Record<string, string>, signal: AbortSignal, redirects = 0): Promise<HttpResponse> {
  return new Promise((resolve, reject) => {
    const target = new URL(url);
    const client = target.protocol === 'https:' ? https : target.protocol === 'http:' ? http : null;
    if (!client) return reject(new HttpGetError(`unsupported url scheme ${target.protocol}`, undefined));
    // A fresh connection per download: no agent pool to keep alive (and hold memory) between jobs.
    const req = client.get(target, { headers, signal, agent: false }, (res) => {
      const status = res.statusCode ?? 0;
      const location = res.headers.location;
      if ([301, 302, 303, 307, 308].includes(status) && location) {
        res.destroy();
        if (redirects >= MAX_REDIRECTS) return reject(new HttpGetError('too many redirects', undefined));
        httpGet(new URL(location, target).toString(), headers, signal, redirects + 1).then(resolve, reject);
        return;
      }
      resolve({
        status,
        statusText: res.statusMessage ?? '',
        headers: {
          get: (name) => {
            const v = res.headers[name.toLowerCase()];
            return v === undefined ? null : Array.isArray(v) ? v.join(', ') : v;
          },
        },
        body: res,
        cancel: () => res.destroy(),
      });
    });
    req.on('error', (e: NodeJS.ErrnoException) => reject(signal.aborted ? signal.reason : new HttpGetError(e.message, e.code)));
  });
}
