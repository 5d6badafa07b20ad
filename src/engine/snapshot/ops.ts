import { randomUUID } from 'node:crypto';
import { copyFile } from 'node:fs/promises';
import { ForkdError } from '../../errors.js';
import { ancestorsOf, copySparse, dependentsOf, ensureFullMemory, snapshotBytes } from './chain.js';
import type { SnapshotMeta } from './meta.js';
import type { SnapshotInfo, SnapshotStore } from './store.js';
import { validateTag } from './tag.js';

export interface SnapshotDescription {
  info: SnapshotInfo;
  depth: number;
  parent: string | null;
  /** Parent, grandparent, ... up to the root. */
  ancestors: string[];
  /** Diff links made from this snapshot. */
  dependents: string[];
  /** Guest memory, as the guest sees it. */
  logicalBytes: number;
  /** What the snapshot needs on disk (sparse files count only their data). */
  physicalBytes: number;
  /** A diff link's assembled full memory, rebuilt when missing. */
  cacheBytes: number;
}

/** A snapshot's place in its chain and its disk use. */
export async function describe(snapshots: SnapshotStore, tag: string): Promise<SnapshotDescription> {
  const info = await snapshots.get(tag);
  const [ancestors, dependents, bytes] = await Promise.all([
    ancestorsOf(snapshots, info),
    dependentsOf(snapshots, tag),
    snapshotBytes(info),
  ]);
  return {
    info,
    depth: info.meta.depth ?? 0,
    parent: info.meta.parent,
    ancestors: ancestors.map((a) => a.tag),
    dependents: dependents.map((d) => d.tag),
    logicalBytes: info.meta.memoryMiB * 1024 * 1024,
    physicalBytes: bytes.durable,
    cacheBytes: bytes.cache,
  };
}

/**
 * Removes a snapshot. One that diff links depend on is refused (FORKD_ERR_CONFLICT, naming
 * them) unless `cascade` (remove them too, leaves first) or `force` (remove it anyway: its links
 * keep working while their full-memory caches last, and fail clearly after). `beforeRemove` runs
 * for each tag just before it goes (the engine stops its warm pool).
 */
export async function removeSnapshot(
  snapshots: SnapshotStore,
  tag: string,
  options: { cascade?: boolean; force?: boolean },
  beforeRemove: (tag: string) => Promise<void>,
): Promise<string[]> {
  const dependents = await dependentsOf(snapshots, validateTag(tag));
  if (dependents.length && !options.cascade && !options.force) {
    throw new ForkdError(
      'FORKD_ERR_CONFLICT',
      `snapshot ${tag} has dependents: ${dependents.map((d) => d.tag).join(', ')}`,
      {
        hint: `remove them first, or: forkd rmi ${tag} --cascade (removes them too) or --force`,
      },
    );
  }
  const removed: string[] = [];
  if (options.cascade)
    for (const d of dependents) removed.push(...(await removeSnapshot(snapshots, d.tag, options, beforeRemove)));
  await beforeRemove(tag);
  await snapshots.remove(tag);
  return [...removed, tag];
}

/** Flattens a chain link into a new root snapshot `to` (full memory, no parent). */
export async function compact(snapshots: SnapshotStore, from: string, to: string): Promise<SnapshotInfo> {
  const info = await snapshots.get(from);
  await ensureFullMemory(snapshots, info);
  const writer = await snapshots.beginWrite(to);
  try {
    await Promise.all([copySparse(info.memoryFile, writer.memoryFile), copyFile(info.vmstateFile, writer.vmstateFile)]);
    const meta: SnapshotMeta = {
      ...info.meta,
      tag: to,
      created: new Date().toISOString(),
      id: randomUUID(),
      parent: null,
      depth: 0,
    };
    delete meta.parentPin;
    return await writer.commit(meta);
  } catch (err) {
    await writer.abort();
    throw err;
  }
}
