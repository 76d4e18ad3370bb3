// The daemon's flat YAML reader (daemon/flat-yaml.ts) reads what provisioning and YAML.stringify write, and
// refuses what it does not support without echoing the file.
import YAML from 'yaml';
import { FlatYamlError, parseFlatYaml } from '../../daemon/flat-yaml';

test('reads scalars, quoted strings, block and flow lists, and comments', () => {
  const text = [
    '# a comment',
    'robot_id: "robot07"          # trailing comment',
    "host: 'broker # not a comment'",
    'mqtt_port: 2883',
    'report_interval_s: 0.5',
    'mqtt_tls: false',
    'endpoint_url:',
    'allowed_roots:',
    '  - "/opt/a"',
    '  - /opt/b # plain',
    'signing_public_keys: [k1:AAA=, "k2:BBB="]',
    'empty: []',
    'password: "p\\"w\\\\d"',
    '',
  ].join('\n');
  expect(parseFlatYaml(text)).toEqual({
    robot_id: 'robot07',
    host: 'broker # not a comment',
    mqtt_port: 2883,
    report_interval_s: 0.5,
    mqtt_tls: false,
    endpoint_url: null,
    allowed_roots: ['/opt/a', '/opt/b'],
    signing_public_keys: ['k1:AAA=', 'k2:BBB='],
    empty: [],
    password: 'p"w\\d',
  });
});

test('reads what YAML.stringify writes, long folded strings included', () => {
  const doc = {
    robot_id: 'robot01',
    mqtt_password: 'x'.repeat(30),
    note: `${'word '.repeat(40)}end`,
    quoted: `${'a: b '.repeat(30)}end`,
    allowed_roots: ['/work/some/rather/long/path/that/goes/on/and/on/for/a/while/root', '/tmp'],
    max_concurrent_jobs: 2,
    looks_numeric: '0123',
    flag: true,
  };
  expect(parseFlatYaml(YAML.stringify(doc))).toEqual(doc);
});

test.each([
  ['nested mappings', 'mqtt:\n  host: x\n', /line 2: nested mappings are not supported/],
  ['an unterminated quote', 'a: "b\nc: d\n', /unterminated/],
  ['a block scalar', 'a: |\n  text\n', /only scalars and lists/],
  ['a list document', '- a\n- b\n', /must be a YAML mapping/],
])('refuses %s, naming the line but never its content', (_name, text, pattern) => {
  let message = '';
  try {
    parseFlatYaml(`${text}secret: hunter2-do-not-echo\n`);
  } catch (e) {
    expect(e).toBeInstanceOf(FlatYamlError);
    message = (e as Error).message;
  }
  expect(message).toMatch(pattern);
  expect(message).not.toContain('hunter2');
});
