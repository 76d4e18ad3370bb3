// HTTP server lifecycle shared by the API entry points and the tests: listen with timeouts that suit streaming
// uploads, and close gracefully (finish in-flight requests, then cut what is left).
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { RequestListener } from 'node:http';

export async function listen(handler: RequestListener, port: number, host?: string): Promise<http.Server> {
  const server = http.createServer(handler);
  // Node's default 5-minute requestTimeout would cut a large upload or download in the middle; a stalled
  // connection is still closed by the inactivity timeout below.
  server.requestTimeout = 0;
  server.headersTimeout = 60_000;
  server.setTimeout(120_000);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server;
}

export const serverPort = (server: http.Server): number => (server.address() as AddressInfo).port;

/** Stops accepting connections, lets in-flight requests finish for up to `graceMs`, then closes the rest. */
export async function closeServer(server: http.Server, graceMs = 25_000): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeIdleConnections();
  const timer = setTimeout(() => server.closeAllConnections(), graceMs);
  try {
    await closed;
  } finally {
    clearTimeout(timer);
  }
}
