// Bounded concurrency over a list, for I/O fan-outs (signals, publishes) that must not open everything at once.

/** Runs `fn` over `items`, at most `limit` at a time; resolves when all have finished (rejects on the first error). */
export async function forEachLimited<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const lane = async () => {
    while (next < items.length) await fn(items[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
}

/** `items` in consecutive slices of `size` (the last may be shorter); bulk writes default to 50 per command. */
export function chunks<T>(items: readonly T[], size = 50): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}
