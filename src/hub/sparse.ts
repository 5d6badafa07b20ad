/**
 * Sparse files in a tar that GNU tar restores with their holes: the GNU sparse format 1.0 (a pax
 * entry with GNU.sparse.major=1, minor=0, name and realsize; its data is a decimal map of the
 * data extents, padded to 512 bytes, then the extents' bytes). Memory and disk images are mostly
 * zero: only their data extents are read, stored and written back.
 */
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { ForkdError } from '../errors.js';

export interface Extent {
  offset: number;
  length: number;
}

const PAGE = 4096;
const SCAN_BYTES = 1024 * 1024;
/** Zero gaps shorter than this are kept as data: fewer, longer extents and a shorter map. */
const MIN_HOLE = 64 * 1024;
const ZERO_PAGE = Buffer.alloc(PAGE);
/** A map we accept when reading: 1 MiB is over 40,000 extents. */
const MAX_MAP_BYTES = 1024 * 1024;

/** The file's size, the sha256 of its whole content, and its extents of non-zero data (holes and zero pages left out). */
export async function scanFile(path: string): Promise<{ size: number; sha256: string; extents: Extent[] }> {
  const file = await open(path, 'r');
  try {
    const { size } = await file.stat();
    const extents: Extent[] = [];
    const hash = createHash('sha256');
    const buf = Buffer.alloc(SCAN_BYTES);
    for (let base = 0; base < size; base += SCAN_BYTES) {
      const { bytesRead } = await file.read(buf, 0, Math.min(SCAN_BYTES, size - base), base);
      hash.update(buf.subarray(0, bytesRead));
      for (let at = 0; at < bytesRead; at += PAGE) {
        const end = Math.min(at + PAGE, bytesRead);
        if (buf.subarray(at, end).equals(ZERO_PAGE.subarray(0, end - at))) continue;
        const offset = base + at;
        const last = extents.at(-1);
        if (last && offset - (last.offset + last.length) < MIN_HOLE) last.length = offset + (end - at) - last.offset;
        else extents.push({ offset, length: end - at });
      }
    }
    return { size, sha256: hash.digest('hex'), extents };
  } finally {
    await file.close();
  }
}

/** The map that starts a sparse entry's data, padded to the tar block size. */
export function encodeSparseMap(extents: Extent[]): Buffer {
  const text = [extents.length, ...extents.flatMap((e) => [e.offset, e.length])].join('\n') + '\n';
  const padded = Math.ceil(Buffer.byteLength(text) / 512) * 512;
  const map = Buffer.alloc(padded);
  map.write(text);
  return map;
}

/** The pax records of a sparse entry named `name` whose full size is `size`. */
export function sparsePax(name: string, size: number): Record<string, string> {
  return {
    'GNU.sparse.major': '1',
    'GNU.sparse.minor': '0',
    'GNU.sparse.name': name,
    'GNU.sparse.realsize': String(size),
  };
}

function badMap(why: string): ForkdError {
  return new ForkdError('FORKD_ERR_CORRUPT', `a sparse entry of the pack has a bad map: ${why}`, {
    hint: 'the pack is damaged; download or pack it again',
  });
}

/**
 * Reads a sparse map from the start of an entry's data. Returns the extents and how many bytes
 * the padded map took, or undefined if `head` does not hold the whole map yet. Extents must be
 * in order, not overlap, and end within `realSize`; their total must be the data that follows.
 */
export function parseSparseMap(
  head: Buffer,
  realSize: number,
  entrySize: number,
): { extents: Extent[]; mapBytes: number } | undefined {
  const numbers: number[] = [];
  let at = 0;
  for (let count = Infinity; numbers.length < 1 + 2 * count;) {
    const newline = head.indexOf(10, at);
    if (newline === -1) {
      if (head.length > MAX_MAP_BYTES) throw badMap('it is over 1 MiB');
      return undefined;
    }
    const text = head.toString('latin1', at, newline);
    if (!/^\d{1,15}$/.test(text)) throw badMap(`${JSON.stringify(text.slice(0, 20))} is not a number`);
    numbers.push(Number(text));
    if (numbers.length === 1) count = numbers[0]!;
    at = newline + 1;
  }
  const mapBytes = Math.ceil(at / 512) * 512;
  const extents: Extent[] = [];
  let end = 0;
  let data = 0;
  for (let i = 1; i < numbers.length; i += 2) {
    const [offset, length] = [numbers[i]!, numbers[i + 1]!];
    if (offset < end || offset + length > realSize) throw badMap(`extent ${offset}+${length} is out of order or range`);
    extents.push({ offset, length });
    end = offset + length;
    data += length;
  }
  if (mapBytes + data !== entrySize)
    throw badMap(`it describes ${data} bytes but the entry holds ${entrySize - mapBytes}`);
  return { extents, mapBytes };
}
