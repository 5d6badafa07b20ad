import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { loadRecipe } from '../../src/engine/images/recipe.js';

const scratch = mkdtempSync(join(tmpdir(), 'forkd-recipe-unit-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** A recipe directory holding `content` as its recipe.json. */
function recipeDir(name: string, content: unknown): string {
  const dir = join(scratch, name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'recipe.json'), typeof content === 'string' ? content : JSON.stringify(content));
  if (!existsSync(join(dir, 'link'))) symlinkSync('/etc/hostname', join(dir, 'link')); // a file outside the recipe
  return dir;
}

describe('loadRecipe', () => {
  test('reads the postgres recipe', () => {
    const r = loadRecipe('postgres');
    expect(r).toMatchObject({
      name: 'postgres',
      base: 'debian-bookworm',
      packages: ['postgresql-15'],
      ports: [5432],
      memoryMiB: 512,
      readyTimeoutMs: 120_000,
    });
    expect(r.build).toContain('initdb');
    expect(r.warmup).toContain('pg_ctl');
    expect(r.ready).toContain('select 1');
  });

  test.each(['python-numpy', 'nodejs'])('the %s recipe ships its eval bridge', (name) => {
    const r = loadRecipe(name);
    expect(Object.keys(r.files)).toEqual([expect.stringMatching(/^\/opt\/forkd\/eval[-_]server\./)]);
    expect(r.ready).toBe('test -S /run/forkd/eval.sock');
  });

  test('a path to a recipe directory works too', () => {
    const dir = recipeDir('tiny', { base: 'none', warmup: 'true', ready_timeout_s: 5 });
    expect(loadRecipe(dir)).toMatchObject({ name: 'tiny', base: 'none', readyTimeoutMs: 5000, packages: [] });
  });

  test.each(['Postgres', '', '.hidden', 'x'.repeat(50)])('refuses the name %j', (name) => {
    expect(() => loadRecipe(name)).toThrow(expect.objectContaining({ code: 'FORKD_ERR_BAD_INPUT' }));
  });

  test.each(['no-such-recipe', '../etc', 'a/b'])('%j is not found, and the hint lists the recipes', (ref) => {
    expect(() => loadRecipe(ref)).toThrow(
      expect.objectContaining({ code: 'FORKD_ERR_NOT_FOUND', hint: expect.stringContaining('postgres, python-numpy') }),
    );
  });

  test.each([
    ['not JSON', '{ "packages": [', /not valid JSON/],
    ['a typo in a field name', { pakages: ['curl'] }, /unknown field pakages/],
    ['a package name with shell in it', { packages: ['curl; rm -rf /'] }, /Debian package names/],
    ['packages that are not a list', { packages: 'curl' }, /Debian package names/],
    ['a file that leaves the recipe dir', { files: { '/etc/x': '../../secret' } }, /leaves its directory/],
    ['a relative image path', { files: { 'etc/x': 'x' } }, /absolute image path/],
    ['a file that is not there', { files: { '/etc/x': 'missing.txt' } }, /missing.txt does not exist/],
    ['a file that is a link', { files: { '/etc/x': 'link' } }, /is not a regular file \(links are refused\)/],
    ['base none with packages', { base: 'none', packages: ['curl'] }, /takes no packages/],
    ['an unknown base', { base: 'alpine' }, /"base" must be/],
    ['memory that is not a number', { memory_mib: '512' }, /"memory_mib" must be an integer/],
    ['a ready timeout of zero', { ready_timeout_s: 0 }, /"ready_timeout_s" must be an integer from 1/],
    ['a warm-up that is not a string', { warmup: ['pg_ctl', 'start'] }, /"warmup" must be a string/],
    ['bad ports', { ports: [5432, 5432] }, /ports must be distinct/],
  ])('refuses %s', (label, content, message) => {
    const dir = recipeDir(`r-${label.replace(/\W+/g, '-')}`.toLowerCase().slice(0, 40), content);
    expect(() => loadRecipe(dir)).toThrow(
      expect.objectContaining({ code: 'FORKD_ERR_BAD_INPUT', message: expect.stringMatching(message) }),
    );
  });
});
