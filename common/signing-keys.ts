// The cloud's deploy-signing keys. Production: OTA_SIGNING_KEYS (a JSON array of {id, private_key, created_at}, from
// the secret store; a missing value stops the process naming the variable). Locally: <dataDir>/signing-keys.json,
// generated once. Rotation appends a key: the cloud signs with the newest, robots accept every key in their config,
// so a new key is handed to robots (re-provisioning writes all public keys) before or while it starts signing.
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from './config';
import { generateSigningKey, publicKeyEntry, type PublicKeyEntry, type SigningKey } from './signing';

export class SigningKeyError extends Error {
  override name = 'SigningKeyError';
}

export const signingKeyFile = (cfg: Pick<Config, 'dataDir'>) => path.join(cfg.dataDir, 'signing-keys.json');

function parseKeys(text: string, source: string): SigningKey[] {
  let keys: unknown;
  try {
    keys = JSON.parse(text);
  } catch {
    throw new SigningKeyError(`${source}: not JSON`);
  }
  const ok = (k: unknown): k is SigningKey =>
    typeof k === 'object' && k !== null && typeof (k as SigningKey).id === 'string' && typeof (k as SigningKey).private_key === 'string';
  if (!Array.isArray(keys) || keys.length === 0 || !keys.every(ok)) {
    throw new SigningKeyError(`${source}: expected a non-empty JSON array of {"id","private_key","created_at"}`);
  }
  return keys;
}

function writeKeys(file: string, keys: SigningKey[], exclusive: boolean): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(keys, null, 2) + '\n', { mode: 0o600 });
  try {
    if (exclusive) fs.linkSync(tmp, file); // atomic create-if-absent: concurrent first runs agree on one key
    else fs.renameSync(tmp, file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  } finally {
    fs.rmSync(tmp, { force: true });
  }
}

/** Every signing key, oldest first (the newest signs). */
export function loadSigningKeys(cfg: Pick<Config, 'dataDir' | 'env' | 'ota'>): SigningKey[] {
  if (cfg.ota.signingKeys) return parseKeys(cfg.ota.signingKeys, 'OTA_SIGNING_KEYS');
  if (cfg.env === 'production') throw new SigningKeyError('OTA_SIGNING_KEYS is required in production');
  const file = signingKeyFile(cfg);
  if (!fs.existsSync(file)) writeKeys(file, [generateSigningKey()], true);
  return parseKeys(fs.readFileSync(file, 'utf8'), file);
}

export const newestSigningKey = (keys: readonly SigningKey[]): SigningKey => keys[keys.length - 1];

export const publicKeyEntries = (keys: readonly SigningKey[]): PublicKeyEntry[] => keys.map(publicKeyEntry);

/** Local stacks only: adds a new newest key (production rotates by updating OTA_SIGNING_KEYS). */
export function rotateSigningKey(cfg: Pick<Config, 'dataDir' | 'env' | 'ota'>): SigningKey {
  if (cfg.ota.signingKeys) throw new SigningKeyError('keys come from OTA_SIGNING_KEYS: rotate them there');
  const keys = loadSigningKeys(cfg);
  const key = generateSigningKey();
  writeKeys(signingKeyFile(cfg), [...keys, key], false);
  return key;
}
