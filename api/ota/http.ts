// Small request helpers shared by the route modules.
import type { ZodType } from 'zod';
import { HttpError, unprocessable } from './errors';
import { bucketProblem, type OtaContext } from './types';

/** Validates query or path parameters; a missing or mistyped one is a 422 naming it (FastAPI's status). */
export function parseParams<T>(schema: ZodType<T>, input: unknown): T {
  const parsed = schema.safeParse(input ?? {});
  if (!parsed.success) throw unprocessable(parsed.error);
  return parsed.data;
}

/** Refuses a bucket outside the OTA allow-list (deps.otaBuckets): 400 naming the field. */
export function requireOtaBucket(ctx: OtaContext, bucket: string, field = 's3_bucket'): void {
  const problem = bucketProblem(ctx, bucket);
  if (problem) throw new HttpError(400, `${field}: ${problem}`);
}
