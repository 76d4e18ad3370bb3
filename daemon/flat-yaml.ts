// The YAML the daemon's config uses, and no more (the `yaml` package would cost the robot ~250 KB of bundle and
// ~8 MB of RSS): a mapping of keys to scalars or lists of scalars. Scalars: plain (true/false, null/~, numbers, text),
// "double-quoted" (JSON escapes) or 'single-quoted'; lists as `- item` lines under the key or `[a, b]`; comments;
// long plain or quoted scalars folded over indented continuation lines (as YAML.stringify writes them).
// Errors name the line number, never its content (a config line may be a password).

export type FlatValue = string | number | boolean | null | FlatValue[];

export class FlatYamlError extends Error {
  override name = 'FlatYamlError';
}

/** Strips a trailing ` # comment` outside quotes. */
function stripComment(line: string): string {
  let quote: string | null = null;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quote) {
      if (c === '\\' && quote === '"') i++;
      else if (c === quote) quote = null;
    } else if (c === '"' || c === "'") quote = c;
    else if (c === '#' && (i === 0 || /\s/.test(line[i - 1]))) return line.slice(0, i);
  }
  return line;
}

function scalar(raw: string, lineNo: number): FlatValue {
  const v = raw.trim();
  if (v.startsWith('"')) {
    if (!v.endsWith('"') || v.length < 2) throw new FlatYamlError(`line ${lineNo}: unterminated double-quoted string`);
    try {
      return JSON.parse(v) as string;
    } catch {
      throw new FlatYamlError(`line ${lineNo}: invalid double-quoted string`);
    }
  }
  if (v.startsWith("'")) {
    if (!v.endsWith("'") || v.length < 2) throw new FlatYamlError(`line ${lineNo}: unterminated single-quoted string`);
    return v.slice(1, -1).replace(/''/g, "'");
  }
  if (v.startsWith('[')) {
    if (!v.endsWith(']')) throw new FlatYamlError(`line ${lineNo}: unterminated flow list`);
    const inner = v.slice(1, -1).trim();
    return inner === '' ? [] : inner.split(',').map((item) => scalar(item, lineNo));
  }
  if (v.startsWith('{') || v.startsWith('|') || v.startsWith('>') || v.startsWith('&') || v.startsWith('*')) {
    throw new FlatYamlError(`line ${lineNo}: only scalars and lists of scalars are supported`);
  }
  if (v === '' || v === '~' || v === 'null') return null;
  if (v === 'true') return true;
  if (v === 'false') return false;
  if (/^[-+]?(\d+(\.\d+)?|\.\d+)([eE][-+]?\d+)?$/.test(v)) return Number(v);
  return v;
}

const unclosed = (v: string) => (v.startsWith('"') && !/[^\\]"$/.test(v.slice(1))) || (v.startsWith("'") && !/'$/.test(v.slice(1)));

export function parseFlatYaml(text: string): Record<string, FlatValue> {
  const out: Record<string, FlatValue> = {};
  const lines = text.split(/\r?\n/);
  let listKey: string | null = null;
  /** The key whose scalar may continue on the next, more indented line. */
  let openKey: string | null = null;
  let pending: { key: string; text: string; start: number } | null = null;
  const blockLists = new Set<string>();
  for (let i = 0; i < lines.length; i++) {
    const lineNo = i + 1;
    const raw = lines[i];
    if (pending) {
      // Inside a quoted scalar that spans lines: a line break folds to a space.
      pending.text += ` ${raw.trim()}`;
      if (!unclosed(pending.text)) {
        out[pending.key] = scalar(pending.text, pending.start);
        pending = null;
      }
      continue;
    }
    const line = stripComment(raw).replace(/\s+$/, '');
    if (line.trim() === '' || line === '---') continue;
    const indent = line.length - line.trimStart().length;
    const body = line.trim();
    if (body.startsWith('- ') || body === '-') {
      if (indent === 0 && listKey === null) throw new FlatYamlError('the config must be a YAML mapping of keys to values');
      if (listKey === null) throw new FlatYamlError(`line ${lineNo}: list item without a key`);
      (out[listKey] as FlatValue[]).push(scalar(body.slice(1), lineNo));
      openKey = null;
      continue;
    }
    if (indent > 0) {
      if (openKey !== null && typeof out[openKey] === 'string' && !body.includes(': ')) {
        out[openKey] = `${out[openKey] as string} ${body}`; // a folded plain scalar
        continue;
      }
      throw new FlatYamlError(`line ${lineNo}: nested mappings are not supported`);
    }
    const m = /^([A-Za-z_][A-Za-z0-9_]*)\s*:(?:\s+(.*))?$/.exec(body);
    if (!m) throw new FlatYamlError(`line ${lineNo}: expected "key: value"`);
    const [, key, value = ''] = m;
    listKey = null;
    openKey = null;
    if (value === '') {
      out[key] = [];
      blockLists.add(key);
      listKey = key;
      continue;
    }
    if (unclosed(value)) {
      pending = { key, text: value, start: lineNo };
      continue;
    }
    out[key] = scalar(value, lineNo);
    openKey = key;
  }
  if (pending) throw new FlatYamlError(`line ${pending.start}: unterminated quoted string`);
  // A key with nothing under it is null, not an empty list.
  for (const k of blockLists) if ((out[k] as FlatValue[]).length === 0) out[k] = null;
  return out;
}
