import { open, type FileHandle } from 'node:fs/promises';
import { ForkdError } from '../../errors.js';

/**
 * A diff link's memory: the pages that differ from its parent's, as
 *   "FORKDIF1" | page size (u32 LE) | page count (u32 LE) | page indices (u32 LE each) | pages
 * Sorted indices; the pages follow in the same order.
 */
const MAGIC = Buffer.from('FORKDIF1');
const HEADER_BYTES = 16;
export const PAGE_SIZE = 4096;
const CHUNK = 1024 * 1024;

/**
 * Writes the pages of `next` that differ from `base` (same size) to `out`; returns its bytes and
 * page count. Two passes with bounded memory: find the differing pages (only their indices are
 * kept), then copy them from `next` in runs.
 */
export async function writeMemoryDiff(
  base: string,
  next: string,
  out: string,
): Promise<{ bytes: number; pages: number }> {
  const [a, b] = await Promise.all([open(base, 'r'), open(next, 'r')]);
  const indices: number[] = [];
  let file: FileHandle | undefined;
  try {
    const size = (await b.stat()).size;
    if ((await a.stat()).size !== size) throw new ForkdError('FORKD_ERR_CORRUPT', `${base} and ${next} differ in size`);
    const bufA = Buffer.alloc(CHUNK);
    const bufB = Buffer.alloc(CHUNK);
    for (let offset = 0; offset < size; offset += CHUNK) {
      const length = Math.min(CHUNK, size - offset);
      await Promise.all([a.read(bufA, 0, length, offset), b.read(bufB, 0, length, offset)]);
      for (let p = 0; p < length; p += PAGE_SIZE) {
        if (bufA.compare(bufB, p, p + PAGE_SIZE, p, p + PAGE_SIZE) !== 0) indices.push((offset + p) / PAGE_SIZE);
      }
    }
    const header = Buffer.alloc(HEADER_BYTES + indices.length * 4);
    MAGIC.copy(header, 0);
    header.writeUInt32LE(PAGE_SIZE, 8);
    header.writeUInt32LE(indices.length, 12);
    indices.forEach((index, i) => header.writeUInt32LE(index, HEADER_BYTES + i * 4));
    file = await open(out, 'wx', 0o600);
    await file.write(header);
    // runs of consecutive pages, at most a chunk each
    for (let i = 0; i < indices.length;) {
      let run = 1;
      while (i + run < indices.length && run < CHUNK / PAGE_SIZE && indices[i + run] === indices[i]! + run) run++;
      await b.read(bufB, 0, run * PAGE_SIZE, indices[i]! * PAGE_SIZE);
      await file.write(bufB, 0, run * PAGE_SIZE);
      i += run;
    }
    await file.sync();
    return { bytes: header.length + indices.length * PAGE_SIZE, pages: indices.length };
  } finally {
    await Promise.all([a.close(), b.close(), file?.close()]);
  }
}

/**
 * Writes `out` = `base` with the diff's pages applied (a sparse copy of base first; `cp` keeps
 * holes). `out` is written in place: the caller stages it and installs it once complete.
 */
export async function applyMemoryDiff(
  base: string,
  diff: string,
  out: string,
  copySparse: (from: string, to: string) => Promise<unknown>,
): Promise<void> {
  await copySparse(base, out);
  const [d, target] = await Promise.all([open(diff, 'r'), open(out, 'r+')]);
  try {
    const header = Buffer.alloc(HEADER_BYTES);
    await d.read(header, 0, HEADER_BYTES, 0);
    const count = header.readUInt32LE(12);
    if (!header.subarray(0, 8).equals(MAGIC) || header.readUInt32LE(8) !== PAGE_SIZE) {
      throw new ForkdError('FORKD_ERR_CORRUPT', `${diff} is not a forkd memory diff`, {
        hint: 'remove the snapshot (forkd rmi) and branch it again',
      });
    }
    const index = Buffer.alloc(count * 4);
    await d.read(index, 0, index.length, HEADER_BYTES);
    const page = Buffer.alloc(PAGE_SIZE);
    let at = HEADER_BYTES + index.length;
    for (let i = 0; i < count; i++, at += PAGE_SIZE) {
      const { bytesRead } = await d.read(page, 0, PAGE_SIZE, at);
      if (bytesRead !== PAGE_SIZE) throw new ForkdError('FORKD_ERR_CORRUPT', `${diff} is truncated`);
      await target.write(page, 0, PAGE_SIZE, index.readUInt32LE(i * 4) * PAGE_SIZE);
    }
    await target.sync();
  } finally {
    await Promise.all([d.close(), target.close()]);
  }
}
