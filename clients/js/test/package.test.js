import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

const root = fileURLToPath(new URL('..', import.meta.url));
const read = (path) => readFileSync(join(root, path), 'utf8');

test('package.json: an ES module package with no dependencies whose exports exist', () => {
  const pkg = JSON.parse(read('package.json'));
  assert.equal(pkg.type, 'module');
  assert.equal(pkg.dependencies, undefined);
  assert.equal(pkg.devDependencies, undefined);
  assert.equal(pkg.scripts.test, 'node --test test/');
  for (const entry of Object.values(pkg.exports)) {
    assert.ok(existsSync(join(root, entry.default)), entry.default);
    assert.ok(existsSync(join(root, entry.types)), entry.types);
  }
});

test('library modules import only each other (usable from a page without a build step)', () => {
  const files = ['index.js', ...readdirSync(join(root, 'src')).filter((f) => f.endsWith('.js')).map((f) => `src/${f}`)];
  for (const file of files) {
    const source = read(file);
    const specifiers = [...source.matchAll(/^\s*(?:import|export)\s[^;]*?from\s+'([^']+)'/gms)].map((m) => m[1]);
    for (const s of specifiers) assert.match(s, /^\.\.?\/.+\.js$/, `${file} imports ${s}`);
    assert.doesNotMatch(source, /\brequire\(|\bprocess\.|\bBuffer\b|setImmediate/, `${file} uses a Node-only API`);
  }
});

test('every module has a .d.ts next to it, and index.d.ts declares every export of index.js', async () => {
  for (const f of readdirSync(join(root, 'src')).filter((f) => f.endsWith('.js'))) {
    assert.ok(existsSync(join(root, 'src', f.replace(/\.js$/, '.d.ts'))), `src/${f} has types`);
  }
  const runtime = Object.keys(await import('../index.js')).sort();
  const dts = read('index.d.ts');
  const declared = [...dts.matchAll(/^export \{([^}]*)\} from/gm)]
    .flatMap((m) => m[1].split(','))
    .map((s) => s.trim())
    .filter(Boolean)
    .sort();
  assert.deepEqual(declared, runtime);
  // and each module's .d.ts declares what the module exports
  for (const f of readdirSync(join(root, 'src')).filter((f) => f.endsWith('.js'))) {
    const exports = Object.keys(await import(`../src/${f}`));
    const types = read(`src/${f.replace(/\.js$/, '.d.ts')}`);
    for (const name of exports) {
      assert.match(types, new RegExp(`export declare (?:const|function|class) ${name}\\b`), `src/${f}: ${name} is typed`);
    }
  }
});
