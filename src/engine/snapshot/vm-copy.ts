import { closeSync, openSync, readFileSync, readSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { ForkdError } from '../../errors.js';
import type { StatePaths } from '../../common/state-dir.js';
import { saveDeviceState, waitMigration } from '../vmm/device-state.js';
import type { QemuBinary } from '../vmm/qemu-binary.js';
import type { QmpClient } from '../vmm/qmp.js';
import { VmProcess, type VmLedgerHook } from '../vmm/vm-process.js';
import type { StartedVm } from '../vmm/vm.js';
import type { SnapshotWriter } from './store.js';

/** What the source saw, and what the copy cost. */
export interface BranchCopy {
  /** How long the source's vCPUs were stopped. */
  pauseMs: number;
  /** Bytes QEMU sent over the migration channel (zero pages cost a few bytes each). */
  transferredBytes: number;
  /** Precopy passes (live: 1 + the rounds of pages dirtied meanwhile). */
  passes: number;
  /** Pages a live copy had stale and that were rewritten from the stopped source. */
  rewrittenPages: number;
}

const HELPER_START_TIMEOUT_MS = 30_000;
/** The final pause a live branch aims for (QEMU stops the source when the rest fits in it). */
const LIVE_DOWNTIME_MS = 20;
/** Local socket, local disk: do not let QEMU's 128 MiB/s WAN default throttle the copy. */
const MAX_BANDWIDTH = 16 * 1024 * 1024 * 1024;

const PAGE = 4096;
/** Bits 63 (present) and 61 (file page or shared anon) of a pagemap entry, in its high 32-bit word. */
const PAGEMAP_PRESENT = 0x8000_0000;
const PAGEMAP_FLAGS = PAGEMAP_PRESENT | 0x2000_0000;
/** Pages compared per read (1 MiB). */
const RECONCILE_RUN = 256;

/**
 * Whether a pagemap entry (its high 32-bit word) is a page the process wrote since it mapped the
 * file: present, and a private copy rather than the file's page.
 */
export function isPrivateCopy(pagemapHighWord: number): boolean {
  // `>>> 0`: JS bitwise results are signed 32-bit, and bit 31 is the present bit
  return (pagemapHighWord & PAGEMAP_FLAGS) >>> 0 === PAGEMAP_PRESENT;
}

/**
 * Makes the copy exact. QEMU 7.2 under TCG misses some guest writes in its dirty tracking (about
 * one live copy in four of a busy guest had 5–15 stale pages; children of such a copy hung or
 * panicked). While the source is stopped after the copy, every page it changed since its fork,
 * which the kernel knows exactly (a private, non-file page in /proc/PID/pagemap), is compared
 * with the copy and rewritten where it differs. Returns the pages rewritten.
 */
function reconcileChangedPages(pid: number, ramFile: string, copy: string): number {
  const mapping = readFileSync(`/proc/${pid}/maps`, 'utf8')
    .split('\n')
    .find((line) => line.endsWith(` ${ramFile}`) || line.endsWith(` ${ramFile} (deleted)`));
  if (!mapping) throw new ForkdError('FORKD_ERR_INTERNAL', `QEMU ${pid} has no mapping of ${ramFile}`);
  const [low, high] = mapping
    .split(' ')[0]!
    .split('-')
    .map((hex) => Number.parseInt(hex, 16)) as [number, number];
  const pages = (high - low) / PAGE;
  const fds = [`/proc/${pid}/pagemap`, `/proc/${pid}/mem`].map((path) => openSync(path, 'r'));
  const target = openSync(copy, 'r+');
  try {
    const [pagemap, mem] = fds as [number, number];
    const entries = Buffer.alloc(pages * 8);
    readSync(pagemap, entries, 0, entries.length, (low / PAGE) * 8);
    const changed = (i: number) => isPrivateCopy(entries.readUInt32LE(i * 8 + 4));
    const source = Buffer.alloc(RECONCILE_RUN * PAGE);
    const copied = Buffer.alloc(RECONCILE_RUN * PAGE);
    let rewritten = 0;
    // runs of consecutive changed pages, one read of each side per run
    for (let i = 0; i < pages; i++) {
      if (!changed(i)) continue;
      let run = 1;
      while (run < RECONCILE_RUN && i + run < pages && changed(i + run)) run++;
      readSync(mem, source, 0, run * PAGE, low + i * PAGE);
      readSync(target, copied, 0, run * PAGE, i * PAGE);
      for (let p = 0; p < run; p++) {
        const at = p * PAGE;
        if (source.compare(copied, at, at + PAGE, at, at + PAGE) === 0) continue;
        writeSync(target, source, at, PAGE, (i + p) * PAGE);
        rewritten++;
      }
      i += run - 1;
    }
    return rewritten;
  } finally {
    for (const fd of [...fds, target]) closeSync(fd);
  }
}

async function waitIncoming(qmp: QmpClient): Promise<void> {
  const deadline = Date.now() + HELPER_START_TIMEOUT_MS * 2;
  while ((await qmp.execute<{ status: string }>('query-status')).status === 'inmigrate') {
    if (Date.now() > deadline) throw new ForkdError('FORKD_ERR_SNAPSHOT', 'the branch copy did not arrive in time');
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

/**
 * Copies a running VM's complete state into a snapshot writer: a helper QEMU with the same
 * hardware, its RAM a fresh `share=on` file in the writer's dir, receives a migration of the
 * source (QEMU 7.2 cannot save a forked child's device state without its RAM, since that RAM is a
 * private mapping). The helper then saves its device state alone, like any parent.
 *
 * `full` stops the source for the whole copy; `live` copies while it runs and stops it only for
 * the last round. Either way the source is resumed (`cont`) before this resolves (`resumed`),
 * and the helper's device state is saved after (`done`).
 */
export function copyRunningVm(
  source: StartedVm,
  writer: SnapshotWriter,
  live: boolean,
  paths: StatePaths,
  qemu: QemuBinary,
  ledger?: VmLedgerHook,
): { resumed: Promise<BranchCopy>; done: Promise<BranchCopy> } {
  const spec = source.spec;
  if (!spec.memoryFile) {
    throw new ForkdError('FORKD_ERR_BAD_INPUT', `VM ${source.id} was booted, not forked: only forked VMs can branch`, {
      hint: 'fork from a snapshot (forkd spawn / engine.fork) and branch the child',
    });
  }
  const helperSpec = { ...spec, memoryFile: { path: writer.memoryFile, shared: true }, incoming: true };
  let helper: VmProcess | undefined;
  const resumed = (async (): Promise<BranchCopy> => {
    helper = await VmProcess.launch(helperSpec, paths, qemu, Date.now() + HELPER_START_TIMEOUT_MS, {
      ...(ledger ? { ledger } : {}),
      role: 'branch-helper',
      ...(source.snapshot ? { snapshot: source.snapshot } : {}),
    });
    const channel = `unix:${join(helper.runDir, 'branch.sock')}`;
    await helper.qmp.execute('migrate-incoming', { uri: channel });
    const qmp = source.qmp;
    // both ends must agree: the helper's RAM is shared, and it has to receive it
    await qmp.execute('migrate-set-capabilities', {
      capabilities: [{ capability: 'x-ignore-shared', state: false }],
    });
    await qmp.execute('migrate-set-parameters', { 'downtime-limit': LIVE_DOWNTIME_MS, 'max-bandwidth': MAX_BANDWIDTH });
    const stoppedAt = performance.now();
    if (!live) await qmp.execute('stop');
    let status;
    let completedAt = 0;
    let rewritten = 0;
    try {
      await qmp.execute('migrate', { uri: channel });
      status = await waitMigration(qmp, 'copying the source VM');
      completedAt = performance.now();
      if (live) {
        // A stopped source's copy is whole; a live one may miss writes (see reconcileChangedPages).
        // The helper may still be applying the stream's last pages: the check waits for it, or it
        // would be overwritten by them.
        await waitIncoming(helper.qmp);
        rewritten = reconcileChangedPages(source.pid, spec.memoryFile!.path, writer.memoryFile);
      }
    } finally {
      await qmp.execute('cont').catch(() => {}); // the source runs on, whatever happened to the copy
    }
    const resumedAt = performance.now();
    return {
      // live: QEMU's own measure of the stop up to completion, plus our poll and `cont`
      pauseMs: live ? (status.downtime ?? 0) + (resumedAt - completedAt) : resumedAt - stoppedAt,
      transferredBytes: status.ram?.transferred ?? 0,
      passes: status.ram?.['dirty-sync-count'] ?? 1,
      rewrittenPages: rewritten,
    };
  })();
  const done = (async () => {
    try {
      const copy = await resumed;
      await waitIncoming(helper!.qmp);
      await saveDeviceState(helper!.qmp, writer.vmstateFile);
      return copy;
    } finally {
      await helper?.cleanup(false);
    }
  })();
  resumed.catch(() => {}); // reported through `done` as well
  return { resumed, done };
}
