// Prints a bearer token for the local API, signed with the configured secret (API_JWT_SECRET, generated into
// <dataDir>/local.env when not set). Usage: npx tsx api/token.ts [--sub name] [--ttl 12h]
// The token goes to stdout alone, so `TOKEN=$(npx tsx api/token.ts)` works.
import { loadConfig } from '../common/config';
import { signToken } from './auth';

export function parseTokenArgs(argv: readonly string[]): { subject: string; ttl: string } {
  const out = { subject: 'operator', ttl: '12h' };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[i + 1];
    if ((flag === '--sub' || flag === '--ttl') && (value === undefined || value.startsWith('--'))) {
      throw new Error(`${flag} needs a value`);
    }
    if (flag === '--sub') out.subject = value;
    else if (flag === '--ttl') {
      // jose's time-span syntax: a number and a unit (s, m, h, d, w, y), e.g. 90s, 15m, 12h, 7d.
      if (!/^\d+\s*(s|sec|secs|second|seconds|m|min|mins|minute|minutes|h|hr|hrs|hour|hours|d|day|days|w|week|weeks|y|yr|yrs|year|years)$/i.test(value)) {
        throw new Error(`--ttl: "${value}" is not a duration like 90s, 15m, 12h or 7d`);
      }
      out.ttl = value;
    } else throw new Error(`unknown argument ${flag}`);
    i++;
  }
  return out;
}

const USAGE = 'usage: npx tsx api/token.ts [--sub name] [--ttl 12h]   (prints a bearer token for the OTA API)\n';

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(USAGE);
    return;
  }
  const { subject, ttl } = parseTokenArgs(argv);
  const cfg = loadConfig();
  const token = await signToken(
    { secret: cfg.api.jwtSecret, issuer: cfg.api.jwtIssuer, audience: cfg.api.jwtAudience },
    { subject, ttl },
  );
  process.stdout.write(`${token}\n`);
}

if (require.main === module) {
  main().catch((e: unknown) => {
    process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n${USAGE}`);
    process.exit(1);
  });
}
