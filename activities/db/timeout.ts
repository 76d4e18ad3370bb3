// A client-side deadline for one database operation. The models already send maxTimeMS (server side), but a
// server that stops answering (FerretDB's known hang on large update commands) never enforces it; this makes
// such an operation fail in bounded time so the activity retries instead of hanging until its own timeout.
// A command the server refuses as such fails non-retryable instead (see isPermanentDbError).
import { ApplicationFailure } from '@temporalio/common';

export const DEFAULT_DB_TIMEOUT_MS = 10_000;

/** Error type of a database command the server refused as such (retrying the same command cannot succeed). */
export const DB_COMMAND_REFUSED = 'DbCommandRefused';

/**
 * Server error codes that say "this command is wrong or unsupported", not "try again": BadValue, FailedToParse,
 * TypeMismatch, CommandNotFound, CommandNotSupported, DocumentValidationFailure, NotImplemented (FerretDB's
 * answer to an operator it lacks). Network errors, timeouts and everything else stay retryable.
 */
const PERMANENT_DB_CODES = new Set([2, 9, 14, 59, 115, 121, 238]);

export function isPermanentDbError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'number' && PERMANENT_DB_CODES.has(code);
}

export class DbTimeoutError extends Error {
  override name = 'DbTimeoutError';
}

export async function withDbTimeout<T>(what: string, ms: number, op: PromiseLike<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new DbTimeoutError(`${what}: no answer from the database within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([Promise.resolve(op), deadline]);
  } catch (err) {
    // Retry only what can get better: an activity fails at once (non-retryable) on a refused command instead of
    // retrying it forever under RETRY_UNTIL_INFRA_RECOVERS.
    if (isPermanentDbError(err)) {
      const e = err as { code: number; codeName?: string; message?: string };
      throw ApplicationFailure.nonRetryable(`${what}: the database refused the command (${e.codeName ?? e.code}): ${e.message ?? ''}`, DB_COMMAND_REFUSED);
    }
    throw err;
  } finally {
    clearTimeout(timer);
  }
}
