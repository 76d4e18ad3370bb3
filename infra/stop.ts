// `npm stop`: ends every process the project started (by pid file and command line), nothing else.
import { loadConfig } from '../common/config';
import { stackDown } from './stack';

stackDown(loadConfig(), (l) => console.log(`[stop] ${l}`)).then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e instanceof Error ? e.message : e);
    process.exit(1);
  },
);
