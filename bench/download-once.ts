// Helper process of bench/cloud-sync.ts: one resumable RF download (the activity's own function), so the
// benchmark can SIGKILL it in the middle and resume in another process. Args: url sha256 size target.
// The center JWT comes from the environment (CENTER_JWT), never the command line.
import { downloadResumable } from '../activities/http/download';

const [url, sha256, size, target] = process.argv.slice(2);
downloadResumable({ url, sha256, size: Number(size), target }, process.env.CENTER_JWT ?? '', (offset) => process.stdout.write(`offset=${offset}\n`)).then(
  (r) => {
    process.stdout.write(`done fetched=${r.fetched} resumed_from=${r.resumedFrom}\n`);
    process.exit(0);
  },
  (e: unknown) => {
    process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  },
);
