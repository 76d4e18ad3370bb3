// A client-side deadline for one database operation. The models already send maxTimeMS (server side), but a
// server that stops answering (FerretDB's known hang on large update commands) never enforces it; this makes
// such an operation fail in bounded time so the activity retries instead of hanging until its own timeout.
export const DEFAULT_DB_TIMEOUT_MS = 10_000;

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
  } finally {
    clearTimeout(timer);
  }
}
