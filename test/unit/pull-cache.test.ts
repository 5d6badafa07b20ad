import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { StatePaths } from '../../src/common/state-dir.js';
import { PullCache, type PackSource } from '../../src/hub/pull.js';

const root = mkdtempSync(join(tmpdir(), 'forkd-pull-cache-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const paths = new StatePaths(root);
const sha = (i: number) => i.toString(16).padStart(64, '0');
const source = (i: number): PackSource => ({
  ref: i % 2 ? `acme/pack-${i}@v1` : `https://hub.example/packs/${i}.forkd.tar.zst`,
  url: `https://hub.example/packs/${i}.forkd.tar.zst`,
  sha256: sha(i),
});

describe('pull cache', () => {
  test('pulls recording at once all keep their records', async () => {
    const count = 24;
    for (let i = 0; i < count; i++) mkdirSync(join(paths.snapshots(), `tag-${i}`));
    await Promise.all(Array.from({ length: count }, (_, i) => new PullCache(paths).record(source(i), [`tag-${i}`])));
    const cache = new PullCache(paths);
    for (let i = 0; i < count; i++) expect(cache.lookup(source(i)), source(i).ref).toEqual([`tag-${i}`]);
  });

  test('a record is for its own ref and sha256, and only while its tags are installed', async () => {
    const cache = new PullCache(paths);
    mkdirSync(join(paths.snapshots(), 'kept'));
    await cache.record({ ...source(100), ref: 'acme/kept@v1' }, ['kept', 'gone']);
    await cache.record({ ...source(101), ref: 'acme/other@v1' }, ['kept']);
    expect(cache.lookup({ ...source(100), ref: 'acme/kept@v1' })).toBeUndefined(); // "gone" is not installed
    expect(cache.lookup({ ...source(101), ref: 'acme/other@v1' })).toEqual(['kept']);
    expect(cache.lookup({ ...source(102), ref: 'acme/other@v1' })).toBeUndefined(); // another sha256
    expect(cache.lookup({ ...source(101), ref: 'acme/other@v2' })).toBeUndefined();
    await cache.record({ ...source(102), ref: 'acme/other@v1' }, ['kept']);
    expect(cache.lookup({ ...source(102), ref: 'acme/other@v1' })).toEqual(['kept']);
  });
});
