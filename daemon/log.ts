// The daemon's logger: pino-compatible JSON lines (level numbers, time, pid, hostname, name, msg) in ~60 lines,
// because pino and its workers cost the robot ~10 MB of RSS. Same safety rule as common/logger.ts: values under
// secret-looking keys (passwords, tokens, presigned URLs) are replaced wherever they appear in a logged object.
import os from 'node:os';

export type LogFn = { (obj: object, msg?: string): void; (msg: string): void };
export interface DaemonLogger {
  fatal: LogFn;
  error: LogFn;
  warn: LogFn;
  info: LogFn;
  debug: LogFn;
  child(bindings: Record<string, unknown>): DaemonLogger;
}

const LEVELS = { fatal: 60, error: 50, warn: 40, info: 30, debug: 20, trace: 10 } as const;
const REDACTED = new Set(['password', 'secret', 'secretAccessKey', 'aws_secret_access_key', 'token', 'authorization', 'privateKey', 'url']);

function clean(value: unknown, depth: number): unknown {
  if (value instanceof Error) {
    const code = (value as { code?: unknown }).code;
    return { type: value.name, message: value.message, stack: value.stack, ...(code !== undefined ? { code } : {}) };
  }
  if (typeof value !== 'object' || value === null || depth > 5) return value;
  if (Array.isArray(value)) return value.map((v) => clean(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = REDACTED.has(k) ? '[redacted]' : clean(v, depth + 1);
  return out;
}

export function createDaemonLogger(
  name: string,
  level: string = process.env.LOG_LEVEL ?? 'info',
  write: (line: string) => void = (line) => process.stdout.write(line),
): DaemonLogger {
  const threshold = level === 'silent' ? Infinity : (LEVELS[level as keyof typeof LEVELS] ?? LEVELS.info);
  const base = { pid: process.pid, hostname: os.hostname(), name };
  const make = (bindings: Record<string, unknown>): DaemonLogger => {
    const at = (n: number): LogFn =>
      ((a: object | string, msg?: string) => {
        if (n < threshold) return;
        const fields = typeof a === 'string' ? {} : (clean(a, 0) as Record<string, unknown>);
        const line = { level: n, time: Date.now(), ...base, ...bindings, ...fields, msg: typeof a === 'string' ? a : msg };
        write(`${JSON.stringify(line)}\n`);
      }) as LogFn;
    return {
      fatal: at(LEVELS.fatal),
      error: at(LEVELS.error),
      warn: at(LEVELS.warn),
      info: at(LEVELS.info),
      debug: at(LEVELS.debug),
      child: (more) => make({ ...bindings, ...(clean(more, 0) as Record<string, unknown>) }),
    };
  };
  return make({});
}
