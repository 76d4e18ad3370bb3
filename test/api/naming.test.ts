// Pure checks of the names and paths the API derives from client input (no servers needed).
import {
  deployPathProblem,
  generateObjectName,
  objectNameProblem,
  pythonJsonDumps,
  sanitizeFilename,
} from '../../api/ota/naming';
import { decodeCursor, encodeCursor } from '../../api/ota/routes/jobs';
import { deployTargetProblem } from '../../api/ota/routes/deploy';
import { parseTokenArgs } from '../../api/token';

const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}/;

describe('sanitizeFilename', () => {
  it.each([
    ['test.txt', 'test.txt'],
    ['../../etc/passwd', 'passwd'],
    ['/abs/dir/file.bin', 'file.bin'],
    ['C:\\Users\\me\\file.txt', 'file.txt'],
    ['a\u0000b\nc.txt', 'abc.txt'],
    ['..', ''],
    ['.', ''],
    ['dir/', ''],
    ['', ''],
    [undefined, ''],
  ])('%j -> %j', (input, expected) => {
    expect(sanitizeFilename(input)).toBe(expected);
  });

  it('caps the length at 200 bytes without splitting a character', () => {
    const out = sanitizeFilename('é'.repeat(150));
    expect(Buffer.byteLength(out)).toBeLessThanOrEqual(200);
    expect(out).toBe('é'.repeat(100));
  });
});

describe('generateObjectName', () => {
  it('is <filename>_<uuid4> and keeps the filename', () => {
    const { objectName, fileName } = generateObjectName('test.txt');
    expect(objectName).toMatch(new RegExp(`^test\\.txt_${UUID.source}$`));
    expect(fileName).toBe('test.txt');
  });

  it('is a bare uuid4 that doubles as the file name when there is no filename (reference behaviour)', () => {
    const { objectName, fileName } = generateObjectName('');
    expect(objectName).toMatch(new RegExp(`^${UUID.source}$`));
    expect(fileName).toBe(objectName);
  });

  it('never repeats', () => {
    expect(generateObjectName('a').objectName).not.toBe(generateObjectName('a').objectName);
  });
});

describe('objectNameProblem', () => {
  it.each(['test.txt_1', 'dir/sub/file', 'a..b'])('accepts %j', (n) => expect(objectNameProblem(n)).toBeNull());
  it.each(['', '/abs', 'a/../b', '../x', './x', 'a\u0000b', 'x'.repeat(1025)])('refuses %j', (n) =>
    expect(objectNameProblem(n)).toEqual(expect.any(String)),
  );
});

describe('deployPathProblem', () => {
  it.each(['/tmp/test.txt', '/opt/app/config.yaml', '/a/b..c/d'])('accepts %j', (p) => expect(deployPathProblem(p)).toBeNull());
  it.each([
    ['', 'is required'],
    ['tmp/test.txt', 'must be an absolute path'],
    ['/tmp/../etc/passwd', 'must not contain ".." segments'],
    ['/tmp/..', 'must not contain ".." segments'],
    ['/tmp/a\u0000b', 'must not contain NUL'],
    ['/tmp/dir/', 'must name a file, not a directory'],
    ['/tmp/a\nb', 'must not contain control characters'],
  ])('refuses %j: %s', (p, why) => expect(deployPathProblem(p)).toBe(why));
});

describe('deployTargetProblem', () => {
  it('names robot_id first, then deploy_path', () => {
    expect(deployTargetProblem('', '/tmp/x')).toBe('robot_id: Field required');
    expect(deployTargetProblem('robot/01', '/tmp/x')).toMatch(/^robot_id: /);
    expect(deployTargetProblem('robot01', '')).toBe('deploy_path: is required');
    expect(deployTargetProblem('robot01', 'rel')).toBe('deploy_path: must be an absolute path');
    expect(deployTargetProblem('robot01', '/tmp/x')).toBeNull();
  });
});

describe('pythonJsonDumps (deploy_msg as the reference stores it)', () => {
  it('uses Python json.dumps separators and key order', () => {
    expect(pythonJsonDumps({ job_id: 'j', s3_bucket: 'files', s3_object_name: 'o', deploy_path: '/tmp/x' })).toBe(
      '{"job_id": "j", "s3_bucket": "files", "s3_object_name": "o", "deploy_path": "/tmp/x"}',
    );
  });

  it('escapes non-ASCII and control characters like ensure_ascii=True, and stays valid JSON', () => {
    const out = pythonJsonDumps({ p: '/tmp/é\n"x"' });
    expect(out).toBe('{"p": "/tmp/\\u00e9\\n\\"x\\""}');
    expect(JSON.parse(out)).toEqual({ p: '/tmp/é\n"x"' });
  });
});

describe('job list cursor', () => {
  it('round-trips', () => {
    const c = { t: 1763950000123, id: 'abc' };
    expect(decodeCursor(encodeCursor(c))).toEqual(c);
  });
  it.each(['', 'not-base64!', Buffer.from('{"t":"x","id":1}').toString('base64url')])('refuses %j with 400', (raw) => {
    expect(() => decodeCursor(raw)).toThrow(expect.objectContaining({ status: 400 }));
  });
});

describe('token CLI arguments', () => {
  it('defaults to sub=operator, role=operator, ttl=12h', () => expect(parseTokenArgs([])).toEqual({ subject: 'operator', role: 'operator', ttl: '12h' }));
  it('reads --sub, --role, --ttl and --robots', () =>
    expect(parseTokenArgs(['--sub', 'alice', '--role', 'viewer', '--ttl', '15m', '--robots', 'clinic-a-*, robot07'])).toEqual({
      subject: 'alice',
      role: 'viewer',
      ttl: '15m',
      robots: ['clinic-a-*', 'robot07'],
    }));
  it.each([['--ttl', 'soon'], ['--sub'], ['--bogus', 'x'], ['--role', 'root'], ['--role'], ['--robots', ',']])('refuses %j', (...argv) =>
    expect(() => parseTokenArgs(argv)).toThrow());
  it('refuses a --ttl beyond the maximum lifetime, naming API_TOKEN_MAX_TTL', () => {
    expect(() => parseTokenArgs(['--ttl', '25h'], 24 * 3600_000)).toThrow(/API_TOKEN_MAX_TTL/);
    expect(parseTokenArgs(['--ttl', '24h'], 24 * 3600_000).ttl).toBe('24h');
  });
});
