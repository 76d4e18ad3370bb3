// Small request helpers shared by the route modules.
import type { ZodType } from 'zod';
import { HttpError, unprocessable } from './errors';

/** Validates query or path parameters; a missing or mistyped one is a 422 naming it (FastAPI's status). */
export function parseParams<T>(schema: ZodType<T>, input: unknown): T {
  const parsed = schema.safeParse(input ?? {});
  if (!parsed.success) throw unprocessable(parsed.error);
  return parsed.data;
}
