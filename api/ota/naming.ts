// Names that come from clients and end up as S3 keys, database values, MQTT payloads and paths on robots.
// The reference used them verbatim (a filename with `/` or `..` went into the key and into a server-side temp
// path); here every one is sanitised or refused before it is used.
import { randomUUID } from 'node:crypto';

/** S3 object keys are at most 1024 bytes; the generated suffix `_<uuid4>` takes 37 of them. */
const MAX_FILENAME_BYTES = 200;
const MAX_OBJECT_NAME_BYTES = 1024;
const MAX_DEPLOY_PATH_BYTES = 4096;
const CONTROL_CHARS = /[\u0000-\u001f\u007f]/g;

function truncateUtf8(s: string, maxBytes: number): string {
  if (Buffer.byteLength(s) <= maxBytes) return s;
  let out = '';
  for (const ch of s) {
    if (Buffer.byteLength(out + ch) > maxBytes) break;
    out += ch;
  }
  return out;
}

/**
 * The client's multipart filename reduced to a safe base name: the last path segment (either separator, as a
 * Windows client may send `C:\dir\f.txt`), control characters removed, `.`/`..` refused, length capped.
 * Returns '' when nothing usable is left (the caller then names the object by a bare uuid, like the reference).
 */
export function sanitizeFilename(name: string | undefined | null): string {
  if (!name) return '';
  const base = name.split(/[/\\]/).pop() ?? '';
  const clean = truncateUtf8(base.replace(CONTROL_CHARS, '').trim(), MAX_FILENAME_BYTES);
  return clean === '.' || clean === '..' ? '' : clean;
}

/** Reference naming: `<filename>_<uuid4>`, or a bare uuid4 that then also serves as the file name. */
export function generateObjectName(safeFilename: string): { objectName: string; fileName: string } {
  const id = randomUUID();
  return safeFilename ? { objectName: `${safeFilename}_${id}`, fileName: safeFilename } : { objectName: id, fileName: id };
}

/** A caller-chosen object name: null when acceptable, else why not. */
export function objectNameProblem(name: string): string | null {
  if (name.length === 0) return 'must not be empty';
  if (Buffer.byteLength(name) > MAX_OBJECT_NAME_BYTES) return `must be at most ${MAX_OBJECT_NAME_BYTES} bytes`;
  if (/[\u0000-\u001f\u007f]/.test(name)) return 'must not contain control characters';
  if (name.startsWith('/')) return 'must not start with "/"';
  if (name.split('/').some((seg) => seg === '..' || seg === '.')) return 'must not contain "." or ".." segments';
  return null;
}

/**
 * Where a robot writes the file. The robot daemon enforces its own allowed roots; the cloud refuses what can
 * never be valid, so a bad request fails at once instead of as a FAILED job minutes later.
 */
export function deployPathProblem(p: string): string | null {
  if (p.length === 0) return 'is required';
  if (p.includes('\0')) return 'must not contain NUL';
  if (/[\u0001-\u001f\u007f]/.test(p)) return 'must not contain control characters';
  if (!p.startsWith('/')) return 'must be an absolute path';
  if (p.endsWith('/')) return 'must name a file, not a directory';
  if (Buffer.byteLength(p) > MAX_DEPLOY_PATH_BYTES) return `must be at most ${MAX_DEPLOY_PATH_BYTES} bytes`;
  if (p.split('/').includes('..')) return 'must not contain ".." segments';
  return null;
}

/** S3 bucket naming rules (lower-case DNS label style); anything else would only fail later at S3. */
export const BUCKET_NAME_PATTERN = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

/** Metadata keys are queried as `file_metadata.<key>`: a dot or a leading `$` would change the query's meaning. */
export const METADATA_KEY_PATTERN = /^[^.$\u0000][^.\u0000]{0,127}$/;

// Moved with the job document builder (rollout activities build jobs too).
export { pythonJsonDumps } from '../../common/ota-job-doc';
