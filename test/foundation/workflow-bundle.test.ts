// The workers' workflow-bundle cache: a restarted worker loads the bundle of unchanged sources from the cache, and
// any edit of a source file makes a new bundle (a stale bundle would run old workflow code: nondeterminism).
import fs from 'node:fs';
import path from 'node:path';
import { repoRoot } from '../../common/config';
import { bundleWorkflowsInChild, workflowSourcesHash } from '../../workers/workflow-bundle';

// Inside the repo, so webpack finds @temporalio/workflow in its node_modules; its own package.json makes it the
// package whose sources are hashed.
const pkg = fs.mkdtempSync(path.join(repoRoot, '.data', 'bundle-test-'));
const cacheDir = path.join(pkg, 'cache');
const workflowsFile = path.join(pkg, 'workflows', 'index.ts');
const helperFile = path.join(pkg, 'common', 'greeting.ts');

beforeAll(() => {
  fs.writeFileSync(path.join(pkg, 'package.json'), '{"name":"bundle-test","private":true}\n');
  fs.mkdirSync(path.dirname(workflowsFile), { recursive: true });
  fs.mkdirSync(path.dirname(helperFile), { recursive: true });
  fs.writeFileSync(helperFile, "export const greeting = 'hello-v1';\n");
  fs.writeFileSync(workflowsFile, "import { greeting } from '../common/greeting';\nexport async function greet(): Promise<string> { return greeting; }\n");
});
afterAll(() => fs.rmSync(pkg, { recursive: true, force: true }));

test('unchanged sources load from the cache; an edited imported file makes a new bundle', async () => {
  const first = await bundleWorkflowsInChild(workflowsFile, cacheDir);
  expect(first.fromCache).toBe(false);
  expect(first.bundle.code).toContain('hello-v1');
  expect(fs.readdirSync(cacheDir)).toEqual([`${workflowSourcesHash(workflowsFile, cacheDir)}.js`]);

  const again = await bundleWorkflowsInChild(workflowsFile, cacheDir);
  expect(again.fromCache).toBe(true);
  expect(again.bundle.code).toBe(first.bundle.code);

  // Not the entry point but a file it imports, in another folder.
  fs.writeFileSync(helperFile, "export const greeting = 'hello-v2';\n");
  const edited = await bundleWorkflowsInChild(workflowsFile, cacheDir);
  expect(edited.fromCache).toBe(false);
  expect(edited.bundle.code).toContain('hello-v2');
  expect(edited.bundle.code).not.toContain('hello-v1');
  expect(fs.readdirSync(cacheDir).sort()).toHaveLength(2);
});
