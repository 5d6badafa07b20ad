import { randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import { copyFile, link, mkdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { availableParallelism } from 'node:os';
import { ForkdError } from '../errors.js';
import { knownAccel, resolveAccel, type AccelGuest, type AccelVerdict } from './accel.js';
import { hostCpu } from './host-cpu.js';
import { onProcessExit } from './reaper.js';
import { ensureBaseImage } from './images/base.js';
import type { BuildOptions } from './images/cache.js';
import type { ExecResult } from './agent/guest.js';
import type { OnProgress } from './progress.js';
import { activateChild, prepareChild, prepareSpare, type PreparedChild } from './snapshot/fork.js';
import {
  checkCompatible,
  incompatibilities,
  MACHINE_TYPE,
  SNAPSHOT_FORMAT,
  type HostFacts,
  type SnapshotMeta,
} from './snapshot/meta.js';
import type { PackManifest } from '../hub/manifest.js';
import { writePack } from '../hub/pack.js';
import { byteProgress } from '../hub/progress.js';
import { unpack, type PackHost, type UnpackOptions, type Unpacked } from '../hub/unpack.js';
import { fetchPack, PullCache, resolveRef, type PackSource } from '../hub/pull.js';
import { upload } from '../hub/download.js';
import { WarmPool } from './snapshot/pool.js';
import { BRANCH_MODES, copyRunningVm, physicalBytes, type BranchCopy, type BranchMode } from './snapshot/branch.js';
import {
  ancestorsOf,
  contentHash,
  copySparse,
  dependentsOf,
  ensureFullMemory,
  MAX_CHAIN_DEPTH,
  MEMORY_DIFF_FILE,
  snapshotBytes,
} from './snapshot/chain.js';
import { writeMemoryDiff } from './snapshot/memory-diff.js';
import { SnapshotStore, type SnapshotInfo } from './snapshot/store.js';
import { validateTag } from './snapshot/tag.js';
import { StatePaths } from '../common/state-dir.js';
import { saveDeviceState } from './vmm/device-state.js';
import { validatePorts } from './vmm/ports.js';
import { ensureRecipeImage, isPackagedRecipe, loadRecipe, recipeImageKey, type Recipe } from './images/recipe.js';
import { imagesOf, officialGuest, type GuestImages, type OfficialGuest } from './images/official.js';
import type { LaunchOptions } from './vmm/vm-process.js';
import { findQemu, type QemuBinary } from './vmm/qemu-binary.js';
import { StartedVm, type StartVmOptions } from './vmm/vm.js';

export type BootOptions = Omit<StartVmOptions, 'kernel' | 'initrd' | 'accel' | 'paths' | 'qemu'>;

export interface SnapshotOptions {
  /** Boot this recipe's root filesystem (built if needed); its warm-up, ready check, ports and memory apply. */
  recipe?: string;
  /** Shell command run in the parent before the snapshot (start servers, load data); must exit 0. */
  warmup?: string;
  memoryMiB?: number;
  vcpus?: number;
  /** Guest TCP ports every child exposes on 127.0.0.1 (each child gets host ports of its own). */
  ports?: number[];
  onProgress?: OnProgress;
}

export interface BranchResult extends SnapshotInfo {
  mode: BranchMode;
  /** How long the source VM was stopped. */
  pauseMs: number;
  /** Bytes the new snapshot needs on disk (a diff link: its diff; plus device state). */
  bytesWritten: number;
  /** Bytes QEMU sent over the migration channel. */
  transferredBytes: number;
  /** Precopy passes. */
  passes: number;
  /** Pages a diff link stores. */
  diffPages?: number;
  /** Pages of a live copy that QEMU's dirty tracking missed and that were rewritten at the pause. */
  rewrittenPages: number;
  totalMs: number;
}

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

export interface SnapshotResult extends SnapshotInfo {
  timings: { bootMs: number; warmupMs: number; saveMs: number; totalMs: number };
  /** Set when the snapshot is the official pack's, installed rather than taken (`forkd/postgres@0.1.0`). */
  official?: string;
}

/** Everything a snapshot is taken from: what SnapshotOptions and a recipe resolve to, or what a pack records. */
interface SnapshotPlan {
  images: GuestImages;
  imageName: string;
  warmup: string | undefined;
  ready: SnapshotMeta['ready'];
  ports: number[];
  memoryMiB: number;
  vcpus: number;
  prime: string | undefined;
}

const READY_POLL_MS = 200;
const OUTPUT_TAIL_LINES = 10;

function outputTail(r: ExecResult): string {
  const text = `${r.stdout.toString()}${r.stderr.toString()}`.trim();
  return text ? `\n${text.split('\n').slice(-OUTPUT_TAIL_LINES).join('\n')}` : '';
}

/** Polls a recipe's readiness command in the parent until it exits 0. */
async function waitReady(vm: StartedVm, ready: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await vm.exec(ready, { timeoutMs: Math.min(10_000, timeoutMs) });
    if (r.exitCode === 0) return;
    if (Date.now() > deadline) {
      throw vm.failure(
        'FORKD_ERR_SNAPSHOT',
        `step ready failed: not ready after ${timeoutMs} ms: ${ready} (last exit ${r.exitCode})${outputTail(r)}`,
        'the warm-up must start what `ready` checks; raise "ready_timeout_s" in the recipe if it is only slow',
      );
    }
    await new Promise((resolve) => setTimeout(resolve, READY_POLL_MS));
  }
}

/**
 * The plan a snapshot was taken from, as its meta records it: how a pack's snapshot is taken again.
 * The meta comes from a pack: what it asks of this host is checked as a request would be.
 */
function planOf(meta: SnapshotMeta): SnapshotPlan {
  if (meta.branch) {
    throw new ForkdError(
      'FORKD_ERR_INCOMPATIBLE',
      `snapshot ${meta.tag} is a checkpoint of a running VM (${meta.branch.mode} branch of ${meta.branch.from}): it cannot be taken again on another host`,
      { hint: 'take it on this host (run what made it here), or unpack it on a host like the one it was taken on' },
    );
  }
  const bounded = (n: number, max: number) => Number.isInteger(n) && n >= 1 && n <= max;
  if (!bounded(meta.memoryMiB, 65536) || !bounded(meta.vcpus, 64))
    throw new ForkdError(
      'FORKD_ERR_CORRUPT',
      `snapshot ${meta.tag} records ${meta.memoryMiB} MiB and ${meta.vcpus} vCPUs`,
      {
        hint: 'the pack is damaged; download or pack it again',
      },
    );
  validatePorts(meta.ports);
  return {
    images: imagesOf(meta),
    imageName: meta.image.name,
    warmup: meta.warmup ?? undefined,
    ready: meta.ready,
    ports: meta.ports,
    memoryMiB: meta.memoryMiB,
    vcpus: meta.vcpus,
    prime: meta.prime,
  };
}

/** True when `meta` is what taking `plan` would make (an official snapshot serves the request as it is). */
function sameSnapshot(meta: SnapshotMeta, plan: SnapshotPlan): boolean {
  const made = planOf(meta);
  return (
    meta.parent === null &&
    made.images.kernel === plan.images.kernel &&
    made.images.rootfs?.image === plan.images.rootfs?.image &&
    made.warmup === plan.warmup &&
    made.ready?.command === plan.ready?.command &&
    made.memoryMiB === plan.memoryMiB &&
    made.vcpus === plan.vcpus &&
    made.prime === plan.prime &&
    made.ports.join(',') === plan.ports.join(',')
  );
}

/** Children one fork() call may ask for: beyond this a typo (n=100000) would exhaust the host. */
export const MAX_FORK = 256;
/**
 * Children restored at once: one per core. More only contend (measured on 2 cores, N=16 under
 * TCG: 2 at a time 1.15 s wall, 8 at a time 1.6 s), since each restore is CPU-bound.
 */
const FORK_CONCURRENCY = Math.max(2, availableParallelism());

async function mapLimited<T, R>(
  items: T[],
  limit: number,
  fn: (item: T) => Promise<R>,
): Promise<PromiseSettledResult<R>[]> {
  const results: PromiseSettledResult<R>[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]!).then(
        (value) => ({ status: 'fulfilled', value }) as const,
        (reason: unknown) => ({ status: 'rejected', reason }) as const,
      );
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/** The embedded engine: images, accelerator choice, snapshots, forks and warm pools under one state dir. */
export class Engine implements AsyncDisposable {
  /** Accelerator verdicts by guest kernel path. */
  private readonly verdicts = new Map<string, Promise<AccelVerdict>>();
  private base: Promise<GuestImages> | undefined;
  private readonly officials = new Map<string, Promise<OfficialGuest | undefined>>();
  /** Why an official pack is not used, by name: told when the local build starts. */
  private readonly fallbacks = new Map<string, string>();
  private readonly pools = new Map<string, WarmPool>();
  readonly snapshots: SnapshotStore;

  constructor(
    readonly paths: StatePaths = new StatePaths(),
    /** How forked children are launched; the daemon lets them outlive it (it adopts them on restart). */
    private readonly launch: LaunchOptions = {},
  ) {
    this.snapshots = new SnapshotStore(paths);
  }

  /**
   * Kernel + base initramfs, built on first use and reused from the cache after. Memoised per
   * engine: checking the cache hashes the agent sources, busybox and asks gcc its version, which
   * every boot and snapshot would otherwise repeat.
   */
  buildBase(options: BuildOptions = {}): Promise<GuestImages> {
    if (options.lookupOnly) return this.resolveBase(options);
    this.base ??= this.resolveBase(options).catch((err: unknown) => {
      this.base = undefined; // a failed build is retried by the next caller
      throw err;
    });
    return this.base;
  }

  /** The base images: the official pack's where one is pinned (unless FORKD_KERNEL names a kernel), else built here. */
  private async resolveBase(options: BuildOptions): Promise<GuestImages> {
    const official = process.env.FORKD_KERNEL ? undefined : await this.official('base', options);
    return official?.images ?? ensureBaseImage(this.paths, this.announcing('base', options));
  }

  /** `options`, telling first why `name` is built here (see official) once a build really reports progress. */
  private announcing(name: string, options: BuildOptions): BuildOptions {
    const why = this.fallbacks.get(name);
    const { onProgress } = options;
    if (!why || !onProgress) return options;
    let told = false;
    return {
      ...options,
      onProgress: (event) => {
        if (!told) onProgress({ task: 'official pack', phase: name, detail: why });
        told = true;
        onProgress(event);
      },
    };
  }

  /** The official images of `name`, pulled on first use (see images/official.ts); memoised per engine. */
  private official(name: string, options: BuildOptions = {}): Promise<OfficialGuest | undefined> {
    const install = async (source: PackSource, tag: string, head: string) => {
      // a pull cache entry and a download of its own: `forkd pull forkd/NAME@V` installs the same
      // pack under its own tag, and must neither find this install nor share its download
      const own = { ...source, ref: `official-${source.ref}` };
      const r = await this.pullSource(own, { tag, force: true, head }, options.onProgress);
      return { meta: (await this.snapshots.get(r.tags.at(-1)!)).meta, ...(r.retaken ? { retaken: r.retaken } : {}) };
    };
    const onFallback = (notice: string) => this.fallbacks.set(name, notice);
    if (options.lookupOnly) return officialGuest(this.paths, name, install, { ...options, onFallback });
    let guest = this.officials.get(name);
    if (!guest) {
      guest = officialGuest(this.paths, name, install, { ...options, onFallback });
      this.officials.set(name, guest);
      guest.catch(() => this.officials.delete(name));
    }
    return guest;
  }

  /**
   * The accelerator this host runs `guest` with (default: the base image, built if needed);
   * memoised per engine, cached on disk.
   */
  async accel(guest?: AccelGuest): Promise<AccelVerdict> {
    const image = guest ?? (await this.buildBase());
    let verdict = this.verdicts.get(image.kernel);
    if (!verdict) {
      verdict = findQemu().then((qemu) => resolveAccel(image, this.paths, qemu));
      this.verdicts.set(image.kernel, verdict);
      verdict.catch(() => this.verdicts.delete(image.kernel)); // a failure is retried by the next caller
    }
    return verdict;
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
   * Boots a parent with its RAM in the snapshot's memory file, runs the warm-up, pauses it and
   * saves its device state. The parent is then stopped; the snapshot is visible only once complete.
   */
  async snapshot(tag: string, options: SnapshotOptions = {}): Promise<SnapshotResult> {
    validateTag(tag);
    const recipe = options.recipe ? loadRecipe(options.recipe) : undefined;
    const ports = validatePorts(options.ports ?? recipe?.ports ?? []);
    const started = performance.now();
    const build = options.onProgress ? { onProgress: options.onProgress } : {};
    const official = recipe ? await this.officialRecipe(recipe, build) : undefined;
    // the recipe's image first: one that cannot be built (no privilege for it, a bad package)
    // fails before minutes of kernel build
    const rootfs =
      official?.images.rootfs ??
      (recipe?.base === 'debian-bookworm'
        ? await ensureRecipeImage(this.paths, recipe, this.announcing(recipe.name, build)).then((r) => ({
            image: r.image,
            hash: r.key,
          }))
        : undefined);
    // FORKD_KERNEL names the kernel every guest boots: only the official root filesystem is used then
    const officialBase = process.env.FORKD_KERNEL ? undefined : official?.images;
    const base = officialBase ?? (await this.buildBase(build));
    const plan: SnapshotPlan = {
      images: { ...base, ...(rootfs ? { rootfs } : {}) },
      imageName: recipe?.name ?? 'base',
      warmup: [recipe?.warmup, options.warmup].filter(Boolean).join(' && ') || undefined,
      ready: recipe?.ready ? { command: recipe.ready, timeoutMs: recipe.readyTimeoutMs } : undefined,
      ports,
      memoryMiB: options.memoryMiB ?? recipe?.memoryMiB ?? 256,
      vcpus: options.vcpus ?? 1,
      prime: recipe?.prime ?? undefined,
    };
    const installed = official && (await this.snapshots.get(official.tag).catch(() => undefined));
    // the installed one may predate a QEMU upgrade or another FORKD_ACCEL: then it is taken here
    const fits = installed && !incompatibilities(installed.meta, (await this.hostFacts(installed.meta.vm)).host).length;
    if (official && installed && fits && sameSnapshot(installed.meta, plan)) {
      const info = await this.copySnapshot(installed, tag);
      const totalMs = performance.now() - started;
      return { ...info, official: official.ref, timings: { bootMs: 0, warmupMs: 0, saveMs: 0, totalMs } };
    }
    return this.take(tag, plan, started, options.onProgress);
  }

  /** A recipe's root filesystem: its official pack's where one is pinned and fits the recipe, else built here. */
  async recipeImage(
    recipe: Recipe,
    build: BuildOptions = {},
  ): Promise<{ image: string; reused: boolean; official?: string }> {
    const official = await this.officialRecipe(recipe, build);
    if (official?.images.rootfs) return { image: official.images.rootfs.image, reused: true, official: official.ref };
    const built = await ensureRecipeImage(this.paths, recipe, this.announcing(recipe.name, build));
    return { image: built.image, reused: built.reused };
  }

  /**
   * The official images of a packaged recipe, when its pack's root filesystem is the one this
   * recipe builds (a recipe changed since the release, or another Debian mirror, builds locally).
   */
  private async officialRecipe(recipe: Recipe, build: BuildOptions): Promise<OfficialGuest | undefined> {
    if (!isPackagedRecipe(recipe) || recipe.base !== 'debian-bookworm') return undefined;
    const official = await this.official(recipe.name, build);
    if (!official || official.images.rootfs?.hash === (await recipeImageKey(recipe))) return official;
    this.fallbacks.set(recipe.name, `${official.ref} holds another build of the recipe: building locally`);
    return undefined;
  }

  /** A root snapshot under a new tag, its memory hard-linked (snapshots are never written after commit). */
  private async copySnapshot(from: SnapshotInfo, tag: string): Promise<SnapshotInfo> {
    const writer = await this.snapshots.beginWrite(tag);
    try {
      await link(join(from.dir, 'memory.bin'), writer.memoryFile);
      await copyFile(join(from.dir, 'vmstate'), writer.vmstateFile);
      return await writer.commit({ ...from.meta, tag, id: randomUUID(), created: new Date().toISOString() });
    } catch (err) {
      await writer.abort();
      throw err;
    }
  }

  /** Boots a parent from `plan`, warms it, and saves it as `tag` (see snapshot). */
  private async take(
    tag: string,
    plan: SnapshotPlan,
    started = performance.now(),
    onProgress?: OnProgress,
  ): Promise<SnapshotResult> {
    const { images: base, warmup, ports, memoryMiB, vcpus } = plan;
    const rootfs = base.rootfs;
    const [verdict, qemu] = await Promise.all([this.accel(base), findQemu()]);
    const writer = await this.snapshots.beginWrite(tag);
    try {
      onProgress?.({ task: 'snapshot', phase: 'boot', detail: tag });
      const parent = await StartedVm.start({
        kernel: base.kernel,
        initrd: base.initrd,
        accel: verdict.accel,
        memoryMiB,
        vcpus,
        memoryFile: { path: writer.memoryFile, shared: true },
        net: ports.length > 0,
        ...(rootfs ? { rootfs: rootfs.image } : {}),
        paths: this.paths,
        qemu,
      });
      let warmupMs = 0;
      let saveMs = 0;
      try {
        const warmStarted = performance.now();
        if (warmup) {
          onProgress?.({ task: 'snapshot', phase: 'warm-up', detail: warmup });
          const r = await parent.exec(warmup);
          if (r.exitCode !== 0) {
            throw parent.failure(
              'FORKD_ERR_SNAPSHOT',
              `step warm-up failed: exited ${r.exitCode}: ${warmup}${outputTail(r)}`,
              'the warm-up must exit 0; start long-running servers in the background (cmd &)',
            );
          }
        }
        if (plan.ready) await waitReady(parent, plan.ready.command, plan.ready.timeoutMs);
        warmupMs = performance.now() - warmStarted;
        onProgress?.({ task: 'snapshot', phase: 'save' });
        const saveStarted = performance.now();
        await saveDeviceState(parent.qmp, writer.vmstateFile);
        saveMs = performance.now() - saveStarted;
      } finally {
        await parent.kill();
      }
      const { size: vmstateBytes } = await stat(writer.vmstateFile);
      const meta: SnapshotMeta = {
        format: SNAPSHOT_FORMAT,
        tag,
        created: new Date().toISOString(),
        id: randomUUID(),
        parent: null,
        depth: 0,
        image: {
          name: plan.imageName,
          kernelHash: base.kernelHash,
          initrdHash: base.initrdHash,
          ...(rootfs ? { rootfsHash: rootfs.hash } : {}),
        },
        memoryMiB,
        vcpus,
        accel: verdict.accel,
        qemuVersion: qemu.version,
        machine: MACHINE_TYPE,
        ...(verdict.accel === 'kvm' ? { cpu: hostCpu() } : {}),
        vm: {
          kernel: parent.spec.kernel,
          initrd: parent.spec.initrd,
          ...(parent.spec.append ? { append: parent.spec.append } : {}),
          ...(parent.spec.net ? { net: true } : {}),
          ...(parent.spec.rootfs ? { rootfs: parent.spec.rootfs } : {}),
        },
        ports,
        warmup: warmup ?? null,
        ...(plan.ready ? { ready: plan.ready } : {}),
        ...(plan.prime ? { prime: plan.prime } : {}),
        vmstateBytes,
      };
      const info = await writer.commit(meta);
      return { ...info, timings: { bootMs: parent.readyMs, warmupMs, saveMs, totalMs: performance.now() - started } };
    } catch (err) {
      await writer.abort();
      throw err;
    }
  }

  /** What a snapshot must have been taken with to run `guest` here (its kernel decides KVM or not). */
  private async hostFacts(guest: AccelGuest): Promise<{ host: HostFacts; qemu: QemuBinary }> {
    const [verdict, qemu] = await Promise.all([this.accel(guest), findQemu()]);
    return { host: { accel: verdict.accel, qemuVersion: qemu.version, cpu: hostCpu() }, qemu };
  }

  /**
   * A snapshot this host can restore, with whole files, and the QEMU to restore it with. The
   * verdict is for the snapshot's own images, so an unpacked snapshot restores without a build.
   */
  private async restorable(tag: string): Promise<{ info: SnapshotInfo; qemu: QemuBinary }> {
    const info = await this.snapshots.get(tag);
    const { host, qemu } = await this.hostFacts(info.meta.vm);
    checkCompatible(info.meta, host);
    await ensureFullMemory(this.snapshots, info);
    await this.snapshots.verify(info);
    return { info, qemu };
  }

  /**
   * Keeps `size` restore shells of `tag` ready so forks skip QEMU start. Returns once the pool is
   * full. Size 0 removes the pool.
   */
  async warmPool(tag: string, size: number): Promise<WarmPool | undefined> {
    if (!Number.isInteger(size) || size < 0 || size > MAX_FORK) {
      throw new ForkdError('FORKD_ERR_BAD_INPUT', `pool size ${size} is not an integer between 0 and ${MAX_FORK}`);
    }
    const { info, qemu } = await this.restorable(tag);
    await this.pools.get(tag)?.close();
    this.pools.delete(tag);
    if (size === 0) return undefined;
    const pool = new WarmPool(size, () => prepareSpare(info, this.paths, qemu, this.launch));
    this.pools.set(tag, pool);
    await pool.filled();
    return pool;
  }

  /**
   * Forks `n` children from a snapshot: each its own QEMU with the snapshot's memory mapped
   * copy-on-write, resumed and told it was restored. All or nothing: if one fails, the others
   * are killed and the error is thrown.
   */
  async fork(tag: string, n = 1): Promise<StartedVm[]> {
    if (!Number.isInteger(n) || n < 1 || n > MAX_FORK) {
      throw new ForkdError('FORKD_ERR_LIMIT', `cannot fork ${n} children: n must be an integer from 1 to ${MAX_FORK}`, {
        hint: 'fork in batches if you need more',
      });
    }
    const { info, qemu } = await this.restorable(tag);
    const pool = this.pools.get(tag);
    const results = await mapLimited(Array.from({ length: n }), FORK_CONCURRENCY, async () => {
      const startedAt = performance.now();
      const child: PreparedChild = pool?.take() ?? (await prepareChild(info, this.paths, qemu, this.launch));
      return activateChild(child, startedAt, tag);
    });
    const children = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) {
      await Promise.all(children.map((child) => child.kill()));
      throw failed.reason;
    }
    return children;
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
  async startBranch(
    vm: StartedVm,
    tag: string,
    mode: BranchMode,
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
    const source = await this.snapshots.get(vm.snapshot);
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
    const writer = await this.snapshots.beginWrite(tag);
    let copy: ReturnType<typeof copyRunningVm>;
    try {
      copy = copyRunningVm(vm, writer, mode !== 'full', this.paths, qemu);
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
          await ensureFullMemory(this.snapshots, source);
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

  /** Writes `tag`, its chain and the images it runs on to a `.forkd.tar.zst` (src/hub/pack.ts). */
  pack(tag: string, out: string, onProgress: OnProgress = () => {}): ReturnType<typeof writePack> {
    return writePack(this.snapshots, tag, out, byteProgress('pack', 'write', onProgress));
  }

  /**
   * Installs a pack, checked whole before anything becomes visible; refused if this host cannot
   * restore it. Builds nothing: where the accelerator needs a probe boot, the pack's images boot.
   */
  async unpack(
    file: string,
    options: Omit<UnpackOptions, 'onProgress'> = {},
    onProgress: OnProgress = () => {},
  ): Promise<Unpacked> {
    const host: PackHost = {
      known: async (kernelSha256) => {
        const qemu = await findQemu();
        const verdict = await knownAccel(kernelSha256, this.paths, qemu);
        return verdict && { accel: verdict.accel, qemuVersion: qemu.version, cpu: hostCpu() };
      },
      // not memoised: the staged images go away with the staging dir; the verdict is cached on disk
      probe: async (guest) => {
        const qemu = await findQemu();
        const { accel } = await resolveAccel(guest, this.paths, qemu);
        return { accel, qemuVersion: qemu.version, cpu: hostCpu() };
      },
      retake: async (tag, meta) => {
        onProgress({ task: 'unpack', phase: 'snapshot', detail: `${tag}: taking it again on this host` });
        await this.take(tag, planOf(meta), performance.now(), onProgress);
      },
    };
    return unpack(file, this.paths, host, { ...options, onProgress: byteProgress('unpack', 'read', onProgress) });
  }

  /**
   * Installs a pack from a URL or `owner/name[@version]` (FORKD_HUB_URL's registry), checked
   * against the registry's sha256. A ref pulled before with the same sha256, whose snapshots are
   * still there, is not downloaded again (`cached: true`).
   */
  async pull(
    ref: string,
    options: Omit<UnpackOptions, 'onProgress'> = {},
    onProgress: OnProgress = () => {},
  ): Promise<Omit<Unpacked, 'manifest'> & { manifest?: PackManifest; ref: string; cached: boolean }> {
    return this.pullSource(await resolveRef(ref), options, onProgress);
  }

  /** pull, of a pack already located (a registry entry, an official pin). */
  private async pullSource(
    source: PackSource,
    options: Omit<UnpackOptions, 'onProgress'> = {},
    onProgress: OnProgress = () => {},
  ): Promise<Omit<Unpacked, 'manifest'> & { manifest?: PackManifest; ref: string; cached: boolean }> {
    const cache = new PullCache(this.paths);
    const cachedTags = options.force || options.tag ? undefined : cache.lookup(source);
    if (cachedTags) return { ref: source.ref, cached: true, tags: cachedTags };
    const file = await fetchPack(cache, source, byteProgress('pull', 'download', onProgress));
    try {
      const unpacked = await this.unpack(file, options, onProgress);
      await cache.record(source, unpacked.tags);
      return { ...unpacked, ref: source.ref, cached: false };
    } finally {
      await rm(file, { force: true });
    }
  }

  /** Packs `tag` and PUTs it to `url` as a stream (e.g. a presigned upload URL). */
  async push(tag: string, url: string, onProgress: OnProgress = () => {}): Promise<{ bytes: number; sha256: string }> {
    await mkdir(this.paths.tmp(), { recursive: true });
    const file = join(this.paths.tmp(), `push-${process.pid}-${randomUUID()}.forkd.tar.zst`);
    const unregister = onProcessExit(() => rmSync(file, { force: true }));
    try {
      const { bytes, sha256 } = await this.pack(tag, file, onProgress);
      await upload(url, file, byteProgress('push', 'upload', onProgress));
      return { bytes, sha256 };
    } finally {
      await rm(file, { force: true });
      unregister();
    }
  }

  /** BRANCH and wait for the snapshot (see startBranch). */
  async branch(vm: StartedVm, tag: string, mode: BranchMode = 'live'): Promise<BranchResult> {
    return (await this.startBranch(vm, tag, mode)).done;
  }

  /** A snapshot's place in its chain and its disk use. */
  async describe(tag: string): Promise<SnapshotDescription> {
    const info = await this.snapshots.get(tag);
    const [ancestors, dependents, bytes] = await Promise.all([
      ancestorsOf(this.snapshots, info),
      dependentsOf(this.snapshots, tag),
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
   * keep working while their full-memory caches last, and fail clearly after).
   */
  async removeSnapshot(tag: string, options: { cascade?: boolean; force?: boolean } = {}): Promise<string[]> {
    const dependents = await dependentsOf(this.snapshots, validateTag(tag));
    if (dependents.length && !options.cascade && !options.force) {
      throw new ForkdError(
        'FORKD_ERR_CONFLICT',
        `snapshot ${tag} has dependents: ${dependents.map((d) => d.tag).join(', ')}`,
        { hint: `remove them first, or: forkd rmi ${tag} --cascade (removes them too) or --force` },
      );
    }
    const removed: string[] = [];
    if (options.cascade) for (const d of dependents) removed.push(...(await this.removeSnapshot(d.tag, options)));
    await this.pools.get(tag)?.close();
    this.pools.delete(tag);
    await this.snapshots.remove(tag);
    return [...removed, tag];
  }

  /** Flattens a chain link into a new root snapshot `to` (full memory, no parent). */
  async compact(from: string, to: string): Promise<SnapshotInfo> {
    const info = await this.snapshots.get(from);
    await ensureFullMemory(this.snapshots, info);
    const writer = await this.snapshots.beginWrite(to);
    try {
      await Promise.all([
        copySparse(info.memoryFile, writer.memoryFile),
        copyFile(info.vmstateFile, writer.vmstateFile),
      ]);
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

  /** The size `tag`'s warm pool was given (0: none). */
  poolSize(tag: string): number {
    return this.pools.get(tag)?.size ?? 0;
  }

  /** Restore shells waiting in all warm pools. */
  get pooledChildren(): number {
    return [...this.pools.values()].reduce((sum, pool) => sum + pool.available, 0);
  }

  /** Stops the warm pools (children handed out are the caller's to kill). */
  async close(): Promise<void> {
    await Promise.all([...this.pools.values()].map((pool) => pool.close()));
    this.pools.clear();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
