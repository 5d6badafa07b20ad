import { randomUUID } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { BRANCH_MODES } from '../../api/schemas.js';
import type { BranchMode } from '../../api/types.js';
import type { BranchStats } from '../../api/wire.js';
import { ForkdError } from '../../errors.js';
import type { StatePaths } from '../../common/state-dir.js';
import { findQemu } from '../vmm/qemu-binary.js';
import type { VmLedgerHook } from '../vmm/vm-process.js';
import type { StartedVm } from '../vmm/vm.js';
import { contentHash, ensureFullMemory, MAX_CHAIN_DEPTH, MEMORY_DIFF_FILE, physicalBytes } from './chain.js';
import { writeMemoryDiff } from './memory-diff.js';
import type { SnapshotMeta } from './meta.js';
import type { SnapshotInfo, SnapshotStore } from './store.js';
import { validateTag } from './tag.js';
import { copyRunningVm, type BranchCopy } from './vm-copy.js';

export interface BranchResult extends SnapshotInfo, BranchStats {
  /** Pages of a live copy that QEMU's dirty tracking missed and that were rewritten at the pause. */
  rewrittenPages: number;
}

/**
 * BRANCH: copies a running forked VM into a new snapshot that forks like any other; the VM
 * carries on where it was. `full` pauses it for the whole copy, `live` only for the last round,
 * and `diff` copies like `live` and then stores only the pages that differ from the snapshot
 * the VM was forked from (a chain link).
 *
 * Returns once the VM runs again (`resumed`, with the pause) and when the snapshot is committed
 * (`done`). A failure leaves no snapshot, and the VM running.
 */
export async function startBranch(
  snapshots: SnapshotStore,
  paths: StatePaths,
  vm: StartedVm,
  tag: string,
  mode: BranchMode,
  /** Told of the helper QEMU the copy runs (the daemon's ledger). */
  ledger?: VmLedgerHook,
): Promise<{ resumed: Promise<BranchCopy>; done: Promise<BranchResult> }> {
  validateTag(tag);
  if (!BRANCH_MODES.includes(mode)) {
    throw new ForkdError(
      'FORKD_ERR_BAD_INPUT',
      `branch mode ${JSON.stringify(mode)} is not one of ${BRANCH_MODES.join(', ')}`,
    );
  }
  if (!vm.snapshot) {
    throw new ForkdError('FORKD_ERR_BAD_INPUT', `VM ${vm.id} was booted, not forked: only forked VMs can branch`, {
      hint: 'fork from a snapshot (forkd spawn / engine.fork) and branch the child',
    });
  }
  if (vm.stopped) throw new ForkdError('FORKD_ERR_VM_STOPPED', `VM ${vm.id} has stopped`);
  const source = await snapshots.get(vm.snapshot);
  const depth = mode === 'diff' ? (source.meta.depth ?? 0) + 1 : 0;
  if (depth > MAX_CHAIN_DEPTH) {
    throw new ForkdError(
      'FORKD_ERR_LIMIT',
      `a diff of ${source.tag} would be link ${depth} of its chain (max ${MAX_CHAIN_DEPTH})`,
      {
        hint: `branch with --mode full, or flatten first: forkd compact --from ${source.tag} --to NEW`,
      },
    );
  }
  const qemu = await findQemu();
  const started = performance.now();
  const writer = await snapshots.beginWrite(tag);
  let copy: ReturnType<typeof copyRunningVm>;
  try {
    copy = copyRunningVm(vm, writer, mode !== 'full', paths, qemu, ledger);
  } catch (err) {
    await writer.abort();
    throw err;
  }
  const done = (async (): Promise<BranchResult> => {
    try {
      const copied = await copy.done;
      const vmstateBytes = (await stat(writer.vmstateFile)).size;
      let diffPages: number | undefined;
      let memoryBytes = await physicalBytes(writer.memoryFile);
      if (mode === 'diff') {
        await ensureFullMemory(snapshots, source);
        const diff = await writeMemoryDiff(source.memoryFile, writer.memoryFile, join(writer.dir, MEMORY_DIFF_FILE));
        [diffPages, memoryBytes] = [diff.pages, diff.bytes];
      }
      const meta: SnapshotMeta = {
        ...source.meta,
        tag,
        created: new Date().toISOString(),
        id: randomUUID(),
        parent: mode === 'diff' ? source.tag : null,
        depth,
        branch: { from: source.tag, mode, pauseMs: Math.round(copied.pauseMs * 10) / 10 },
        vmstateBytes,
      };
      if (mode === 'diff') meta.parentPin = { id: source.meta.id ?? '', sha256: await contentHash(source) };
      else delete meta.parentPin;
      const info = await writer.commit(meta);
      return {
        ...info,
        mode,
        pauseMs: copied.pauseMs,
        bytesWritten: memoryBytes + vmstateBytes,
        transferredBytes: copied.transferredBytes,
        passes: copied.passes,
        rewrittenPages: copied.rewrittenPages,
        ...(diffPages !== undefined ? { diffPages } : {}),
        totalMs: performance.now() - started,
      };
    } catch (err) {
      await writer.abort();
      throw err;
    }
  })();
  done.catch(() => {}); // the caller may only await `resumed`; the failure is theirs through `done`
  return { resumed: copy.resumed, done };
}
