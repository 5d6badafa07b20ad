import { randomUUID } from 'node:crypto';
import { copyFile, link, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ForkdError } from '../../errors.js';
import type { StatePaths } from '../../common/state-dir.js';
import type { ExecResult } from '../../api/types.js';
import type { HostAccel } from '../host-accel.js';
import { hostCpu } from '../host-cpu.js';
import type { GuestImageSource } from '../images/guest-images.js';
import { imagesOf, type GuestImages } from '../images/official.js';
import { loadRecipe } from '../images/recipe.js';
import type { OnProgress } from '../progress.js';
import { saveDeviceState } from '../vmm/device-state.js';
import { validatePorts } from '../vmm/ports.js';
import { findQemu } from '../vmm/qemu-binary.js';
import type { VmLedgerHook } from '../vmm/vm-process.js';
import { StartedVm } from '../vmm/vm.js';
import { incompatibilities, MACHINE_TYPE, SNAPSHOT_FORMAT, type SnapshotMeta } from './meta.js';
import type { SnapshotInfo, SnapshotStore } from './store.js';
import { validateTag } from './tag.js';

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

export interface SnapshotResult extends SnapshotInfo {
  timings: { bootMs: number; warmupMs: number; saveMs: number; totalMs: number };
  /** Set when the snapshot is the official pack's, installed rather than taken (`forkd/postgres@0.1.0`). */
  official?: string;
}

/** Everything a snapshot is taken from: what SnapshotOptions and a recipe resolve to, or what a pack records. */
export interface SnapshotPlan {
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

/**
 * Polls a recipe's readiness command in the parent until it exits 0. A check that overruns its
 * own time (a slow guest under load) counts as not ready yet, until the recipe's timeout.
 */
async function waitReady(vm: StartedVm, ready: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const pollMs = Math.min(10_000, timeoutMs);
  for (;;) {
    let last: string;
    try {
      const r = await vm.exec(ready, { timeoutMs: pollMs });
      if (r.exitCode === 0) return;
      last = `(last exit ${r.exitCode})${outputTail(r)}`;
    } catch (err) {
      if (!(err instanceof ForkdError && err.code === 'FORKD_ERR_AGENT_TIMEOUT')) throw err;
      last = `(the last check did not finish within ${pollMs} ms)`;
    }
    if (Date.now() > deadline) {
      throw vm.failure(
        'FORKD_ERR_SNAPSHOT',
        `step ready failed: not ready after ${timeoutMs} ms: ${ready} ${last}`,
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
export function planOf(meta: SnapshotMeta): SnapshotPlan {
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
export function sameSnapshot(meta: SnapshotMeta, plan: SnapshotPlan): boolean {
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

/** Takes root snapshots: boots a parent, warms it, waits until it is ready and saves it. */
export class SnapshotMaker {
  constructor(
    private readonly paths: StatePaths,
    private readonly snapshots: SnapshotStore,
    private readonly images: GuestImageSource,
    private readonly accel: HostAccel,
    /** Told of parent VMs (the daemon's ledger). */
    private readonly ledger: VmLedgerHook | undefined,
  ) {}

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
    const official = recipe ? await this.images.officialRecipe(recipe, build) : undefined;
    // the recipe's image first: one that cannot be built (no privilege for it, a bad package)
    // fails before minutes of kernel build
    const rootfs =
      official?.images.rootfs ??
      (recipe?.base === 'debian-bookworm'
        ? await this.images.buildRecipeImage(recipe, build).then((r) => ({ image: r.image, hash: r.key }))
        : undefined);
    // FORKD_KERNEL names the kernel every guest boots: only the official root filesystem is used then
    const officialBase = process.env.FORKD_KERNEL ? undefined : official?.images;
    const base = officialBase ?? (await this.images.buildBase(build));
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
    const fits =
      installed && !incompatibilities(installed.meta, (await this.accel.facts(installed.meta.vm)).host).length;
    if (official && installed && fits && sameSnapshot(installed.meta, plan)) {
      const info = await this.copySnapshot(installed, tag);
      const totalMs = performance.now() - started;
      return { ...info, official: official.ref, timings: { bootMs: 0, warmupMs: 0, saveMs: 0, totalMs } };
    }
    return this.take(tag, plan, started, options.onProgress);
  }

  /** Takes a snapshot again here from what its meta records (a pack's snapshot this host cannot restore). */
  async retake(tag: string, meta: SnapshotMeta, onProgress?: OnProgress): Promise<SnapshotResult> {
    return this.take(tag, planOf(meta), performance.now(), onProgress);
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
    const [verdict, qemu] = await Promise.all([this.accel.verdict(base), findQemu()]);
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
        launch: { ...(this.ledger ? { ledger: this.ledger } : {}), role: 'parent', snapshot: tag },
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
}
