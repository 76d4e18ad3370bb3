// The API's Prometheus series: request latency by route, and OTA jobs and rollouts by status (read from the
// database when scraped: one grouped read per collection, kept for a few seconds so frequent scrapes cost nothing).
import type { RequestHandler } from 'express';
import { Gauge, Histogram, type Registry } from 'prom-client';
import type { OtaModels } from '../common/models/ota';
import { createRegistry } from '../common/metrics';

/** How long the status counts read at a scrape are reused. */
const COUNTS_TTL_MS = 5000;

export interface ApiMetrics {
  registry: Registry;
  /** Times every request (label `route`: the matched route pattern, never the raw path with its ids). */
  middleware: RequestHandler;
}

export function createApiMetrics(models: Pick<OtaModels, 'OtaJob' | 'OtaRollout'> & Partial<Pick<OtaModels, 'OtaJobArchive' | 'OtaRolloutResult'>>, dbTimeoutMs: number): ApiMetrics {
  const registry = createRegistry('api');
  const latency = new Histogram({
    name: 'fleetsync_http_request_duration_seconds',
    help: 'API request latency by method, route pattern and status',
    labelNames: ['method', 'route', 'status'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [registry],
  });
  let countsAt = 0;
  let counts: Promise<{ jobs: Map<string, number>; rollouts: Map<string, number> }> | null = null;
  const readCounts = () => {
    if (!counts || Date.now() - countsAt > COUNTS_TTL_MS) {
      countsAt = Date.now();
      const group = async (model: typeof models.OtaJob | typeof models.OtaRollout) => {
        const rows = await (model as typeof models.OtaJob).aggregate<{ _id: string; n: number }>([{ $group: { _id: '$status', n: { $sum: 1 } } }]).option({ maxTimeMS: dbTimeoutMs });
        return new Map(rows.map((r) => [String(r._id), r.n]));
      };
      // Finished jobs are moved to the archive (api/ota/archiver.ts): counted there too, so totals never drop.
      const archive = models.OtaJobArchive;
      // Live rollout jobs that ended are PENDING in their documents and counted by their result rows.
      const results = models.OtaRolloutResult;
      const none = async () => new Map<string, number>();
      counts = Promise.all([group(models.OtaJob), group(models.OtaRollout), archive ? group(archive) : none(), results ? group(results as unknown as typeof models.OtaJob) : none()]).then(([jobs, rollouts, archived, ended]) => {
        for (const [status, n] of archived) jobs.set(status, (jobs.get(status) ?? 0) + n);
        for (const [status, n] of ended) {
          jobs.set(status, (jobs.get(status) ?? 0) + n);
          jobs.set('PENDING', Math.max(0, (jobs.get('PENDING') ?? 0) - n));
        }
        return { jobs, rollouts };
      });
      counts.catch(() => (counts = null));
    }
    return counts;
  };
  new Gauge({
    name: 'fleetsync_ota_jobs',
    help: 'OTA jobs by status',
    labelNames: ['status'] as const,
    registers: [registry],
    async collect() {
      this.reset();
      for (const [status, n] of (await readCounts()).jobs) this.set({ status }, n);
    },
  });
  new Gauge({
    name: 'fleetsync_ota_rollouts',
    help: 'OTA rollouts by status',
    labelNames: ['status'] as const,
    registers: [registry],
    async collect() {
      this.reset();
      for (const [status, n] of (await readCounts()).rollouts) this.set({ status }, n);
    },
  });
  const middleware: RequestHandler = (req, res, next) => {
    const end = latency.startTimer({ method: req.method });
    res.on('finish', () => {
      const route = req.route ? `${req.baseUrl}${String(req.route.path)}` : 'unmatched';
      end({ route, status: String(res.statusCode) });
    });
    next();
  };
  return { registry, middleware };
}
