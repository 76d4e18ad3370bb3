// Routes the Temporal SDK's own logs (worker state, workflow and activity logs, core) through the project's
// pino logger, so a worker's log is one stream of JSON lines with the same redaction as everything else.
import { DefaultLogger, Runtime, type LogEntry, type LogLevel } from '@temporalio/worker';
import type { Logger } from '../common/logger';

const LEVELS: Record<LogLevel, 'trace' | 'debug' | 'info' | 'warn' | 'error'> = {
  TRACE: 'trace',
  DEBUG: 'debug',
  INFO: 'info',
  WARN: 'warn',
  ERROR: 'error',
};

/**
 * Installs the SDK runtime once per process (before any connection). `metricsBindAddress` (host:port) turns on the
 * runtime's Prometheus exporter: workflow/activity task latencies, schedule-to-start, slots, polls, sticky cache.
 */
export function installTemporalLogger(log: Logger, level: LogLevel = 'INFO', metricsBindAddress?: string): void {
  const sdk = log.child({ component: 'temporal-sdk' });
  Runtime.install({
    logger: new DefaultLogger(level, (entry: LogEntry) => sdk[LEVELS[entry.level]]({ ...entry.meta }, entry.message)),
    ...(metricsBindAddress ? { telemetryOptions: { metrics: { prometheus: { bindAddress: metricsBindAddress } } } } : {}),
  });
}
