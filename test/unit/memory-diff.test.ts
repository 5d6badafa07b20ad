import { randomBytes } from 'node:crypto';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { applyMemoryDiff, PAGE_SIZE, writeMemoryDiff } from '../../src/engine/snapshot/memory-diff.js';

const dir = mkdtempSync(join(tmpdir(), 'forkd-diff-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('memory diffs (FORKDIF1)', () => {
  test('store exactly the changed pages, in runs across chunk edges, and rebuild the file byte for byte', async () => {
    const pages = 700; // more than two 1 MiB chunks, not a multiple of one
    const base = randomBytes(pages * PAGE_SIZE);
    const next = Buffer.from(base);
    const changed = [0, 1, 2, 255, 256, 257, 400, pages - 1];
    for (let p = 300; p < 560; p++) changed.push(p); // a run longer than a chunk
    const unique = [...new Set(changed)];
    for (const p of unique) next[p * PAGE_SIZE + 17]! ^= 0xff;
    writeFileSync(join(dir, 'base'), base);
    writeFileSync(join(dir, 'next'), next);

    const r = await writeMemoryDiff(join(dir, 'base'), join(dir, 'next'), join(dir, 'diff'));
    expect(r).toEqual({ pages: unique.length, bytes: 16 + unique.length * (4 + PAGE_SIZE) });
    expect(statSync(join(dir, 'diff')).size).toBe(r.bytes);

    await applyMemoryDiff(join(dir, 'base'), join(dir, 'diff'), join(dir, 'rebuilt'), async (from, to) =>
      copyFileSync(from, to),
    );
    expect(readFileSync(join(dir, 'rebuilt')).equals(next)).toBe(true);
  });

  test('files of different sizes are refused', async () => {
    writeFileSync(join(dir, 'short'), Buffer.alloc(PAGE_SIZE));
    await expect(writeMemoryDiff(join(dir, 'base'), join(dir, 'short'), join(dir, 'diff2'))).rejects.toMatchObject({
      code: 'FORKD_ERR_CORRUPT',
    });
  });
});
