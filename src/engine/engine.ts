import { StatePaths } from '../common/state-dir.js';
import type { AccelGuest, AccelVerdict } from './accel.js';
import { HostAccel } from './host-accel.js';
import type { BuildOptions } from './images/cache.js';
import { GuestImageSource } from './images/guest-images.js';
import type { GuestImages, OfficialPacks } from './images/official.js';
import type { Recipe } from './images/recipe.js';
import type { OnProgress } from './progress.js';
import type { BranchMode } from '../api/types.js';
import { startBranch, type BranchResult } from './snapshot/branch.js';
import { SnapshotMaker, type SnapshotOptions, type SnapshotResult } from './snapshot/create.js';
import { Forker } from './snapshot/fork.js';
import type { SnapshotMeta } from './snapshot/meta.js';
import { compact, describe, removeSnapshot, type SnapshotDescription } from './snapshot/ops.js';
import type { PoolState, WarmPool } from './snapshot/pool.js';
import { SnapshotStore, type SnapshotInfo } from './snapshot/store.js';
import type { BranchCopy } from './snapshot/vm-copy.js';
import { VmProcess, type LaunchOptions, type VmLedgerHook } from './vmm/vm-process.js';
import { StartedVm, type AdoptableVm, type StartVmOptions } from './vmm/vm.js';
import { findQemu } from './vmm/qemu-binary.js';

export { MAX_FORK } from '../api/schemas.js';
// what the daemon's ledger of VMs handles, so it needs nothing from the VMM layer itself
export { describeExit, type LaunchedVm, type VmLedgerHook, type VmRole } from './vmm/vm-process.js';
export type { AdoptableVm, StartedVm } from './vmm/vm.js';
export type { VmSpec } from './vmm/qemu-args.js';
export type { BranchResult } from './snapshot/branch.js';
export type { SnapshotOptions, SnapshotResult } from './snapshot/create.js';
export type { SnapshotDescription } from './snapshot/ops.js';

export type BootOptions = Omit<StartVmOptions, 'kernel' | 'initrd' | 'accel' | 'paths' | 'qemu' | 'launch'>;

export interface EngineOptions {
  /** How forked children are launched; the daemon lets them outlive it (it adopts them on restart). */
  launch?: LaunchOptions;
  /** Where official images come from (the Hub: see openEngine in src/hub/hub.ts); without it, everything is built here. */
  officialPacks?: OfficialPacks;
}

/**
 * The embedded engine: images, accelerator choice, snapshots, forks and warm pools under one state
 * dir. A facade over its rooms (src/engine/snapshot/{create,fork,branch,ops}.ts).
 */
export class Engine implements AsyncDisposable {
  readonly snapshots: SnapshotStore;
  private readonly images: GuestImageSource;
  private readonly accels: HostAccel;
  private readonly maker: SnapshotMaker;
  private readonly forker: Forker;
  private readonly ledger: VmLedgerHook | undefined;

  constructor(
    readonly paths: StatePaths = new StatePaths(),
    options: EngineOptions = {},
  ) {
    this.snapshots = new SnapshotStore(paths);
    this.images = new GuestImageSource(paths, options.officialPacks);
    this.ledger = options.launch?.ledger;
    this.accels = new HostAccel(paths, this.ledger);
    this.maker = new SnapshotMaker(paths, this.snapshots, this.images, this.accels, this.ledger);
    this.forker = new Forker(paths, this.snapshots, this.accels, options.launch ?? {});
  }

  /** Kernel + base initramfs: the official pack's where one is pinned, else built on first use; memoised. */
  buildBase(options: BuildOptions = {}): Promise<GuestImages> {
    return this.images.buildBase(options);
  }

  /** A recipe's root filesystem: its official pack's where one is pinned and fits the recipe, else built here. */
  recipeImage(
    recipe: Recipe,
    build: BuildOptions = {},
  ): Promise<{ image: string; reused: boolean; official?: string }> {
    return this.images.recipeImage(recipe, build);
  }

  /**
   * The accelerator this host runs `guest` with (default: the base image, built if needed);
   * memoised per engine, cached on disk.
   */
  async accel(guest?: AccelGuest): Promise<AccelVerdict> {
    return this.accels.verdict(guest ?? (await this.buildBase()));
  }

  /** Boots a fresh microVM from the base image (building it if needed). */
  async boot(options: BootOptions = {}, onProgress?: OnProgress): Promise<StartedVm> {
    const base = await this.buildBase(onProgress ? { onProgress } : {});
    const [verdict, qemu] = await Promise.all([this.accel(base), findQemu()]);
    return StartedVm.start({
      ...options,
      kernel: base.kernel,
      initrd: base.initrd,
      accel: verdict.accel,
      paths: this.paths,
      qemu,
    });
  }

  /**
   * Takes over a forked VM that a previous forkd process left running (its agent must answer),
   * reported to the launch options' ledger like the VMs this engine starts. On failure the VM is
   * killed and its files removed, and the error says why.
   */
  adopt(vm: AdoptableVm): Promise<StartedVm> {
    return StartedVm.adopt(vm, this.paths, this.ledger);
  }

  /** True while the QEMU a previous forkd process started from `runDir` still runs. */
  leftoverRunning(runDir: string, spawnedPid?: number): boolean {
    return VmProcess.leftoverRunning(runDir, spawnedPid);
  }

  /** Kills the QEMU a previous forkd process started from `runDir` (if it runs) and removes its files. */
  reapLeftover(runDir: string, spawnedPid?: number): Promise<void> {
    return VmProcess.reapLeftover(runDir, this.paths, spawnedPid);
  }

  /** Takes a root snapshot (see snapshot/create.ts). */
  snapshot(tag: string, options: SnapshotOptions = {}): Promise<SnapshotResult> {
    return this.maker.snapshot(tag, options);
  }

  /** Takes a snapshot again on this host from what its meta records (a pack's, that cannot be restored here). */
  retake(tag: string, meta: SnapshotMeta, onProgress?: OnProgress): Promise<SnapshotResult> {
    return this.maker.retake(tag, meta, onProgress);
  }

  /** Keeps `size` restore shells of `tag` ready so forks skip QEMU start; 0 removes the pool. */
  warmPool(tag: string, size: number): Promise<WarmPool | undefined> {
    return this.forker.warmPool(tag, size);
  }

  /** Forks `n` children from a snapshot, all or nothing (see snapshot/fork.ts). */
  fork(tag: string, n = 1): Promise<StartedVm[]> {
    return this.forker.fork(tag, n);
  }

  /** BRANCH: copies a running forked VM into a new snapshot (see snapshot/branch.ts). */
  startBranch(
    vm: StartedVm,
    tag: string,
    mode: BranchMode,
  ): Promise<{ resumed: Promise<BranchCopy>; done: Promise<BranchResult> }> {
    return startBranch(this.snapshots, this.paths, vm, tag, mode, this.ledger);
  }

  /** BRANCH and wait for the snapshot (see startBranch). */
  async branch(vm: StartedVm, tag: string, mode: BranchMode = 'live'): Promise<BranchResult> {
    return (await this.startBranch(vm, tag, mode)).done;
  }

  /** A snapshot's place in its chain and its disk use. */
  describe(tag: string): Promise<SnapshotDescription> {
    return describe(this.snapshots, tag);
  }

  /** Removes a snapshot and its warm pool (see snapshot/ops.ts for dependents, cascade and force). */
  removeSnapshot(tag: string, options: { cascade?: boolean; force?: boolean } = {}): Promise<string[]> {
    return removeSnapshot(this.snapshots, tag, options, (removed) => this.forker.dropPool(removed));
  }

  /** Flattens a chain link into a new root snapshot `to` (full memory, no parent). */
  compact(from: string, to: string): Promise<SnapshotInfo> {
    return compact(this.snapshots, from, to);
  }

  /** `tag`'s warm pool: size (0: none), spares ready, whether it gave up refilling and why. */
  poolState(tag: string): PoolState {
    return this.forker.poolState(tag);
  }

  /** Warm pools that gave up refilling after repeated failures. */
  get failingPools(): number {
    return this.forker.failingPools;
  }

  /** Restore shells waiting in all warm pools. */
  get pooledChildren(): number {
    return this.forker.pooledChildren;
  }

  /** Stops the warm pools (children handed out are the caller's to kill). */
  async close(): Promise<void> {
    await this.forker.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
