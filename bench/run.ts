// `npm run bench -- <name> [options]`: runs one benchmark; each prints key=value figures, its baseline's
// figures from the same run, and the ratio between them.
const benches: Record<string, () => Promise<{ main: (args: string[]) => Promise<void> }>> = {
  'ota-fleet': () => import('./ota-fleet'),
  'ota-rollout': () => import('./ota-rollout'),
  daemon: () => import('./daemon'),
  'robot-sync': () => import('./robot-sync'),
  'cloud-sync': () => import('./cloud-sync'),
};

async function main(): Promise<void> {
  const [name, ...args] = process.argv.slice(2);
  const load = name ? benches[name] : undefined;
  if (!load) throw new Error(`usage: npm run bench -- <${Object.keys(benches).join('|')}> [options]`);
  await (await load()).main(args);
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e instanceof Error ? e.stack : e);
    process.exit(1);
  },
);
