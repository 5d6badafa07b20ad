import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { StatePaths } from '../../src/common/state-dir.js';
import { contentHash, ensureFullMemory, MEMORY_DIFF_FILE } from '../../src/engine/snapshot/chain.js';
import { PAGE_SIZE, writeMemoryDiff } from '../../src/engine/snapshot/memory-diff.js';
import type { SnapshotMeta } from '../../src/engine/snapshot/meta.js';
import { SnapshotStore } from '../../src/engine/snapshot/store.js';

const root = mkdtempSync(join(tmpdir(), 'forkd-assembly-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const MEMORY_MIB = 8;
const meta = (tag: string, extra: Partial<SnapshotMeta> = {}): SnapshotMeta => ({
  format: 1,
  tag,
  id: randomBytes(8).toString('hex'),
  created: '2026-12-02T00:00:00.000Z',
  parent: null,
  image: { name: 'base', kernelHash: 'k', initrdHash: 'i' },
  memoryMiB: MEMORY_MIB,
  vcpus: 1,
  accel: 'tcg',
  qemuVersion: '9.2.0',
  machine: 'microvm',
  vm: { kernel: '/k', initrd: '/i' },
  warmup: null,
  vmstateBytes: 16,
  ports: [],
  ...extra,
});

/** A root snapshot and a diff link of it (pages changed all over), as files: no VM needed to assemble it. */
async function rootAndLink(store: SnapshotStore, paths: StatePaths): Promise<Buffer> {
  const rootDir = join(paths.snapshots(), 'root');
  const linkDir = join(paths.snapshots(), 'link');
  mkdirSync(rootDir);
  mkdirSync(linkDir);
  const memory = Buffer.alloc(MEMORY_MIB * 1024 * 1024);
  randomBytes(256 * PAGE_SIZE).copy(memory, 0);
  const next = Buffer.from(memory);
  for (let page = 0; page < next.length / PAGE_SIZE; page += 3) next[page * PAGE_SIZE + 5] = 0xa5;
  writeFileSync(join(rootDir, 'memory.bin'), memory);
  writeFileSync(join(rootDir, 'vmstate'), Buffer.alloc(16, 1));
  const rootMeta = meta('root');
  writeFileSync(join(rootDir, 'meta.json'), JSON.stringify(rootMeta));
  const scratch = join(root, 'next.bin');
  writeFileSync(scratch, next);
  await writeMemoryDiff(join(rootDir, 'memory.bin'), scratch, join(linkDir, MEMORY_DIFF_FILE));
  rmSync(scratch);
  writeFileSync(join(linkDir, 'vmstate'), Buffer.alloc(16, 2));
  const pin = { id: rootMeta.id!, sha256: await contentHash(await store.get('root')) };
  writeFileSync(join(linkDir, 'meta.json'), JSON.stringify(meta('link', { parent: 'root', parentPin: pin, depth: 1 })));
  return next;
}

describe('diff link memory assembly', () => {
  test('forks of one link assembling at once each get the whole memory; no staging file is left', async () => {
    const paths = new StatePaths(join(root, 'state'));
    const store = new SnapshotStore(paths);
    const expected = await rootAndLink(store, paths);
    const link = await store.get('link');
    await Promise.all(Array.from({ length: 6 }, () => ensureFullMemory(store, link)));
    expect(readFileSync(link.memoryFile).equals(expected)).toBe(true);
    expect(readdirSync(link.dir).sort()).toEqual(['memory.bin', MEMORY_DIFF_FILE, 'meta.json', 'vmstate']);
    await store.verify(link);
  });

  test('a stale memory.bin of the wrong size is replaced', async () => {
    const paths = new StatePaths(join(root, 'stale'));
    const store = new SnapshotStore(paths);
    const expected = await rootAndLink(store, paths);
    const link = await store.get('link');
    writeFileSync(link.memoryFile, 'half a cache');
    await ensureFullMemory(store, link);
    expect(readFileSync(link.memoryFile).equals(expected)).toBe(true);
  });
});
