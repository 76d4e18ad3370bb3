// Signed deploy messages (DESIGN.md "Robot identity"): the cloud signs what a deploy will write, with Ed25519
// (node:crypto), and a provisioned daemon installs nothing whose signature is missing, bad or expired. The signed
// bytes cover the job id, the robot it is for, the content (sha256 + size), the deploy path and an expiry, so a
// message cannot be replayed to another robot, pointed at another path or given other bytes. Keys have ids: the
// cloud signs with its newest key, daemons accept any key listed in their config, so keys rotate without a gap.
// Only node:crypto here: the daemon bundle imports this file.
import crypto from 'node:crypto';

export interface DeploySignature {
  /** Id of the cloud key that signed (the daemon looks its public key up by id). */
  key_id: string;
  /** Unix seconds after which the daemon refuses the message. */
  expires_at: number;
  /** base64 Ed25519 signature of signedBytes(). */
  value: string;
}

export interface SignedFields {
  job_id: string;
  robot_id: string;
  sha256: string;
  size: number;
  deploy_path: string;
  expires_at: number;
}

/** Newline-separated, with a version tag; no field can hold a newline that would shift the others (checked). */
export function signedBytes(f: SignedFields): Buffer {
  const parts = ['fleetsync-ota-deploy-v1', f.job_id, f.robot_id, f.sha256, String(f.size), f.deploy_path, String(f.expires_at)];
  if (parts.some((p) => p.includes('\n'))) throw new Error('signed fields must not contain newlines');
  return Buffer.from(parts.join('\n'), 'utf8');
}

export interface SigningKey {
  id: string;
  /** PKCS#8 DER, base64. */
  private_key: string;
  created_at: string;
}

/** A public key as it appears in a daemon config: `<key id>:<base64 SPKI DER>`. */
export type PublicKeyEntry = string;

export function generateSigningKey(id = `k${new Date().toISOString().replace(/[-:.TZ]/g, '').slice(0, 14)}-${crypto.randomBytes(2).toString('hex')}`): SigningKey {
  const { privateKey } = crypto.generateKeyPairSync('ed25519');
  return { id, private_key: privateKey.export({ type: 'pkcs8', format: 'der' }).toString('base64'), created_at: new Date().toISOString() };
}

export function publicKeyEntry(key: SigningKey): PublicKeyEntry {
  const priv = crypto.createPrivateKey({ key: Buffer.from(key.private_key, 'base64'), format: 'der', type: 'pkcs8' });
  return `${key.id}:${crypto.createPublicKey(priv).export({ type: 'spki', format: 'der' }).toString('base64')}`;
}

export function signDeploy(key: SigningKey, fields: SignedFields): DeploySignature {
  const priv = crypto.createPrivateKey({ key: Buffer.from(key.private_key, 'base64'), format: 'der', type: 'pkcs8' });
  return { key_id: key.id, expires_at: fields.expires_at, value: crypto.sign(null, signedBytes(fields), priv).toString('base64') };
}

/** Parses `<id>:<base64 SPKI>` entries; throws naming the bad entry. */
export function parsePublicKeys(entries: readonly string[]): Map<string, crypto.KeyObject> {
  const keys = new Map<string, crypto.KeyObject>();
  for (const [i, entry] of entries.entries()) {
    const at = entry.indexOf(':');
    if (at < 1) throw new Error(`signing_public_keys[${i}]: expected "<key id>:<base64 public key>"`);
    let key: crypto.KeyObject;
    try {
      key = crypto.createPublicKey({ key: Buffer.from(entry.slice(at + 1), 'base64'), format: 'der', type: 'spki' });
    } catch {
      throw new Error(`signing_public_keys[${i}]: not a base64 DER public key`);
    }
    if (key.asymmetricKeyType !== 'ed25519') throw new Error(`signing_public_keys[${i}]: not an Ed25519 key`);
    keys.set(entry.slice(0, at), key);
  }
  return keys;
}

export interface VerifiableMessage {
  job_id: string;
  deploy_path: string;
  sha256?: string;
  size?: number;
  signature?: DeploySignature;
}

/** Null when the message may be installed, else the reason it may not (reported as the job's error_msg). */
export function verifyDeploy(
  keys: ReadonlyMap<string, crypto.KeyObject>,
  robotId: string,
  msg: VerifiableMessage,
  nowSeconds = Math.floor(Date.now() / 1000),
): string | null {
  const sig = msg.signature;
  if (!sig) return 'signature missing: this robot installs only deploys signed by the cloud';
  if (msg.sha256 === undefined || msg.size === undefined) return 'signature refused: the message has no sha256/size to verify';
  const key = keys.get(sig.key_id);
  if (!key) return `signature refused: unknown key id ${sig.key_id}`;
  let ok = false;
  try {
    const fields = { job_id: msg.job_id, robot_id: robotId, sha256: msg.sha256, size: msg.size, deploy_path: msg.deploy_path, expires_at: sig.expires_at };
    ok = crypto.verify(null, signedBytes(fields), key, Buffer.from(sig.value, 'base64'));
  } catch {
    ok = false;
  }
  if (!ok) return 'signature refused: it does not match this robot, job, file and deploy path';
  if (sig.expires_at < nowSeconds) return `signature expired at ${new Date(sig.expires_at * 1000).toISOString()}`;
  return null;
}
