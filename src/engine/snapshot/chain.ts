import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { link, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ForkdError } from '../../errors.js';
import { runTool } from '../host-tools.js';
import { applyMemoryDiff } from './memory-diff.js';
import { MEMORY_FILE, VMSTATE_FILE, type SnapshotInfo, type SnapshotStore } from './store.js';

export const MEMORY_DIFF_FILE = 'memory.diff';
/** Links a chain may have below its root: each fork of a deep link would otherwise assemble a long chain. */
export const MAX_CHAIN_DEPTH = 16;

/** A sparse copy: holes stay holes (memory files are mostly zero pages). */
export function copySparse(from: string, to: string): Promise<unknown> {
  return runTool('cp', ['--sparse=always', from, to]);
}

/** The snapshots whose memory depends on `tag` (diff links made from it). */
export async function dependentsOf(store: SnapshotStore, tag: string): Promise<SnapshotInfo[]> {
  return (await store.list()).filter((s) => s.meta.parent === tag);
}

/** Parent, grandparent, ... up to the root. */
export async function ancestorsOf(store: SnapshotStore, info: SnapshotInfo): Promise<SnapshotInfo[]> {
  const chain: SnapshotInfo[] = [];
  for (let at = info; at.meta.parent;) {
    at = await parentOf(store, at);
    chain.push(at);
  }
  return chain;
}

const HASH_CHUNK = 1 << 20;
const ZERO_CHUNK = Buffer.alloc(HASH_CHUNK);
const [ZERO_TAG, DATA_TAG] = [Buffer.from([0]), Buffer.from([1])];

/**
 * sha256 of what a snapshot's state is made of: its device state, and its memory.bin (a root) or
 * memory.diff (a link; its memory.bin is a cache). A link pins its parent by it.
 */
export async function contentHash(info: SnapshotInfo): Promise<string> {
  const hash = createHash('sha256');
  for (const name of [VMSTATE_FILE, info.meta.parent ? MEMORY_DIFF_FILE : MEMORY_FILE]) {
    for await (const chunk of createReadStream(join(info.dir, name), { highWaterMark: HASH_CHUNK })) {
      // memory files are mostly zero: a zero chunk is hashed as one tag byte (0), data as 1 + the bytes
      if (ZERO_CHUNK.equals(chunk as Buffer)) hash.update(ZERO_TAG);
      else hash.update(DATA_TAG).update(chunk as Buffer);
    }
  }
  return hash.digest('hex');
}

/** The parent a diff link was made from, checked to be that very snapshot (not one taken again under its tag). */
async function parentOf(store: SnapshotStore, link: SnapshotInfo): Promise<SnapshotInfo> {
  const tag = link.meta.parent!;
  const parent = await store.get(tag).catch((err: unknown) => {
    throw new ForkdError('FORKD_ERR_CORRUPT', `snapshot ${link.tag} is a diff of ${tag}, which is gone`, {
      hint: `${link.tag} cannot be restored without it: forkd rmi ${link.tag}${err instanceof ForkdError ? ` (${err.code})` : ''}`,
    });
  });
  if (parent.meta.id !== link.meta.parentPin?.id) {
    throw new ForkdError(
      'FORKD_ERR_CORRUPT',
      `snapshot ${link.tag} is a diff of ${tag}, but ${tag} has changed since`,
      {
        hint: `${tag} was removed and taken again; remove ${link.tag} (forkd rmi ${link.tag}) and branch again`,
      },
    );
  }
  return parent;
}

/**
 * Makes sure a snapshot's memory.bin holds its full memory. A root always has it; a diff link's
 * is a cache, assembled from its parent's (itself assembled first if needed) plus its diff.
 */
export async function ensureFullMemory(store: SnapshotStore, info: SnapshotInfo): Promise<void> {
  if (!info.meta.parent) return;
  const expected = info.meta.memoryMiB * 1024 * 1024;
  const size = await stat(info.memoryFile).then(
    (s) => s.size,
    () => -1,
  );
  if (size === expected) return;
  const parent = await parentOf(store, info);
  if ((await contentHash(parent)) !== info.meta.parentPin?.sha256) {
    throw new ForkdError(
      'FORKD_ERR_CORRUPT',
      `snapshot ${info.tag} is a diff of ${parent.tag}, whose content has changed since (sha256 differs)`,
      { hint: `remove ${info.tag} (forkd rmi ${info.tag}) and branch again` },
    );
  }
  await ensureFullMemory(store, parent);
  const diff = join(info.dir, MEMORY_DIFF_FILE);
  if (!existsSync(diff)) {
    throw new ForkdError('FORKD_ERR_CORRUPT', `snapshot ${info.tag} has lost its ${MEMORY_DIFF_FILE}`, {
      hint: `remove it (forkd rmi ${info.tag}) and branch again`,
    });
  }
  // A name of this call's own: forks of the same link (in this process or another) may assemble at once.
  const staging = `${info.memoryFile}.assembling-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    await applyMemoryDiff(parent.memoryFile, diff, staging, copySparse);
    await installAssembled(staging, info.memoryFile, expected);
  } finally {
    await rm(staging, { force: true });
  }
}

/**
 * Puts a complete assembly at `memoryFile` atomically. A link (unlike a rename) never replaces:
 * when a concurrent assembly got there first, its file stays and this one is dropped. Only a
 * memory.bin of the wrong size (a stale cache) is replaced.
 */
async function installAssembled(staging: string, memoryFile: string, expected: number): Promise<void> {
  try {
    await link(staging, memoryFile);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    if ((await stat(memoryFile)).size !== expected) await rename(staging, memoryFile);
  }
}

/** Bytes a file really occupies (memory files are sparse). */
export async function physicalBytes(file: string): Promise<number> {
  return (await stat(file)).blocks * 512;
}

/** Disk use of a snapshot: what it needs (`durable`) and the full-memory cache of a diff link (`cache`). */
export async function snapshotBytes(info: SnapshotInfo): Promise<{ durable: number; cache: number }> {
  const size = (name: string) => physicalBytes(join(info.dir, name)).catch(() => 0);
  const [memory, diff, vmstate, meta] = await Promise.all(
    [MEMORY_FILE, MEMORY_DIFF_FILE, 'vmstate', 'meta.json'].map(size),
  );
  return info.meta.parent
    ? { durable: diff! + vmstate! + meta!, cache: memory! }
    : { durable: memory! + vmstate! + meta!, cache: 0 };
}
