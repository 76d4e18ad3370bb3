// insideRoot (activities/ssh/robot-sync.ts): the only guard between a perfect state's paths and the robot's disk
// outside its rf_root. A unit test, checked against a resolve()-based containment on generated paths as well.
import path from 'node:path';
import { insideRoot } from '../../activities/ssh/robot-sync';

test.each([
  ['/srv/rf', '/srv/rf/a.bin', true],
  ['/srv/rf', '/srv/rf/d/e/f.bin', true],
  ['/srv/rf/', '/srv/rf/a.bin', true],
  ['/srv/rf', '/srv/rf//a.bin', true],
  ['/srv/rf', '/srv/rf/./a.bin', true],
  ['/srv/rf', '/srv/rf/.../a.bin', true], // a name that starts with dots is a name
  ['/srv/rf', '/srv/rf/..a', true],
  ['/', '/etc/x', true],
  ['/srv/rf', '/srv/rf', false],
  ['/srv/rf', '/srv/rf/', false],
  ['/srv/rf', '/srv/rf/.', false],
  ['/srv/rf', '/srv/rf2/a.bin', false],
  ['/srv/rf', '/srv/rf/../etc/passwd', false],
  ['/srv/rf', '/srv/rf/a/../../etc/passwd', false],
  ['/srv/rf', '/srv/rf/a/..', false],
  ['/srv/rf', '/srv/rf/a/../b', false], // inside once resolved, but any `..` is refused
  ['/srv/rf', 'srv/rf/a.bin', false],
  ['/srv/rf', 'a.bin', false],
  ['/srv/rf', '/etc/passwd', false],
])('insideRoot(%j, %j) is %j', (root, p, inside) => {
  expect(insideRoot(root, p)).toBe(inside);
});

test('it agrees with a resolve()-based containment on generated paths', () => {
  const segs = ['a', 'rf', 'srv', '.', '..', '', '...', '..a', 'a..', ' '];
  const roots = ['/srv/rf', '/srv/rf/', '/srv//rf', '/srv/./rf', '/', '/srv/rf2'];
  let seed = 7;
  const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
  let checked = 0;
  const disagreements: string[] = [];
  for (let i = 0; i < 20000; i++) {
    const p = ['/srv/rf/', '/', ''][rnd(3)] + Array.from({ length: 1 + rnd(5) }, () => segs[rnd(segs.length)]).join('/');
    for (const root of roots) {
      const R = path.posix.resolve(root);
      const P = path.posix.resolve(p);
      const expected = path.posix.isAbsolute(p) && !p.split('/').includes('..') && P.startsWith(R === '/' ? '/' : `${R}/`) && P !== R;
      if (insideRoot(root, p) !== expected) disagreements.push(`${JSON.stringify(root)} ${JSON.stringify(p)}: expected ${expected}`);
      checked++;
    }
  }
  expect(checked).toBe(120000);
  expect(disagreements.slice(0, 10)).toEqual([]);
});
