// Sync migrations: what an outdated offline app sends is brought to the current shape before it is stored, so
// nothing it sent is lost. `version_maps.migrations` names which ones apply to a version, in order.
type Data = Record<string, unknown>;
export type Migration = { collection: 'sessions' | 'children'; apply: (data: Data) => Data };

export const MIGRATIONS: Record<string, Migration> = {
  // App 1.x recorded session length in minutes; the current schema stores seconds.
  'sessions-duration-minutes-to-seconds': {
    collection: 'sessions',
    apply: ({ duration_min, ...rest }) => (typeof duration_min === 'number' ? { ...rest, duration_s: Math.round(duration_min * 60) } : rest),
  },
  // App 1.x had one `name` field for a child; the current schema splits it.
  'children-split-name': {
    collection: 'children',
    apply: ({ name, ...rest }) => {
      if (typeof name !== 'string') return rest;
      const [first, ...last] = name.trim().split(/\s+/);
      return { ...rest, first_name: first ?? '', last_name: last.join(' ') };
    },
  },
};

export class UnknownMigrationError extends Error {
  override name = 'UnknownMigrationError';
}

/** The named migrations for one collection, composed in order; throws on a name the code does not know. */
export function migrationFor(names: readonly string[], collection: Migration['collection']): (data: Data) => Data {
  const steps = names.map((n) => {
    const m = MIGRATIONS[n];
    if (!m) throw new UnknownMigrationError(`version map names an unknown sync migration "${n}"`);
    return m;
  });
  const mine = steps.filter((m) => m.collection === collection);
  return (data) => mine.reduce((d, m) => m.apply(d), data);
}
