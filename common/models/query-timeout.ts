// Every query gets a server-side time limit (maxTimeMS): a stuck database must surface as an error, not a hang.
// FerretDB scans a collection on every filter, and once hung it stalls every later write (infra/README.md).
import type { Schema } from 'mongoose';

export function withQueryTimeout(schemas: ReadonlyArray<Schema>, timeoutMs: number): void {
  for (const s of schemas) {
    s.pre(/^find|^count|^update|^delete|^distinct/, function (this: { maxTimeMS?: (ms: number) => unknown }) {
      this.maxTimeMS?.(timeoutMs);
    });
  }
}
