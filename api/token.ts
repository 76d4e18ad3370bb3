// Prints a bearer token for the local API, signed with the configured secret (API_JWT_SECRET, generated into
// <dataDir>/local.env when not set).
// Usage: npm run token -- [--role viewer|operator|admin] [--ttl 12h] [--sub name] [--robots 'clinic-a-*,robot07']
// The token goes to stdout alone, so `TOKEN=$(npm run -s token -- --role viewer)` works; its id (jti, for
// POST /api/v1/tokens/revoke) and expiry go to stderr. A --ttl beyond API_TOKEN_MAX_TTL is refused: the API
// would refuse such a token anyway.
import { decodeJwt } from 'jose';
import { loadConfig, parseDurationMs } from '../common/config';
import { ROLES, sharedSecretSettings, signToken, type Role } from './auth';

export interface TokenArgs {
  subject: string;
  role: Role;
  ttl: string;
  robots?: string[];
}

const FLAGS = ['--sub', '--ttl', '--role', '--robots'] as const;

export function parseTokenArgs(argv: readonly string[], maxTtlMs = Infinity): TokenArgs {
  const out: TokenArgs = { subject: 'operator', role: 'operator', ttl: '12h' };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[i + 1];
    if (!(FLAGS as readonly string[]).includes(flag)) throw new Error(`unknown argument ${flag}`);
    if (value === undefined || value.startsWith('--')) throw new Error(`${flag} needs a value`);
    if (flag === '--sub') out.subject = value;
    else if (flag === '--role') {
      if (!(ROLES as readonly string[]).includes(value)) throw new Error(`--role: "${value}" is not one of ${ROLES.join(', ')}`);
      out.role = value as Role;
    } else if (flag === '--robots') {
      out.robots = value.split(',').map((p) => p.trim()).filter(Boolean);
      if (out.robots.length === 0) throw new Error('--robots: give robot id patterns, e.g. "clinic-a-*,robot07"');
    } else out.ttl = value;
    i++;
  }
  const ttlMs = parseDurationMs(out.ttl);
  if (ttlMs === null || ttlMs < 1000) throw new Error(`--ttl: "${out.ttl}" is not a duration like 90s, 15m, 12h or 7d`);
  if (ttlMs > maxTtlMs) throw new Error(`--ttl: ${out.ttl} is longer than the maximum token lifetime (API_TOKEN_MAX_TTL = ${maxTtlMs / 1000} s)`);
  return out;
}

const USAGE =
  "usage: npm run token -- [--role viewer|operator|admin] [--ttl 12h] [--sub name] [--robots 'pattern,...']\n" +
  '       prints a bearer token for the OTA API (default: role operator, 12h; at most API_TOKEN_MAX_TTL)\n';

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(USAGE);
    return;
  }
  const cfg = loadConfig();
  const args = parseTokenArgs(argv, cfg.api.tokenMaxTtlMs);
  const token = await signToken(
    sharedSecretSettings(cfg.api),
    // Whole seconds from now (parseDurationMs's units are not all jose's).
    { subject: args.subject, role: args.role, robots: args.robots, ttl: `${Math.floor((parseDurationMs(args.ttl) ?? 0) / 1000)}s` },
  );
  const { jti, exp } = decodeJwt(token);
  process.stderr.write(`role=${args.role} jti=${jti} expires=${new Date((exp ?? 0) * 1000).toISOString()}\n`);
  process.stdout.write(`${token}\n`);
}

if (require.main === module) {
  main().catch((e: unknown) => {
    process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n${USAGE}`);
    process.exit(1);
  });
}
