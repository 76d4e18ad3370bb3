// Prometheus metrics of the cloud processes (prom-client): each process has its own registry with the Node.js
// process metrics (CPU, memory, event-loop lag) plus its own series, all prefixed `fleetsync_`. The API serves it
// on its own port at /metrics; the bridge, which has no HTTP server, on a small one (cfg.metrics.bridgePort). The
// worker's endpoint is the Temporal SDK runtime's own exporter (workers/main.ts).
import http from 'node:http';
import net from 'node:net';
import { collectDefaultMetrics, Registry } from 'prom-client';

export function createRegistry(service: string): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ service });
  collectDefaultMetrics({ register: registry, prefix: 'fleetsync_' });
  return registry;
}

/** Serves `registry` at GET /metrics on host:port (nothing else); resolves once listening. */
export async function serveMetrics(registry: Registry, port: number, host: string): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404).end();
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
      (err: unknown) => res.writeHead(500).end(String(err)),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return server;
}

/**
 * True when host:port can be listened on now. A metrics port already taken (a second worker or bridge started on
 * the same configuration, e.g. a rolling restart) must not stop the process: it then runs without its endpoint.
 */
export function portFree(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.createServer();
    probe.once('error', () => resolve(false));
    probe.listen(port, host, () => probe.close(() => resolve(true)));
  });
}
