import { randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { StatePaths } from '../common/state-dir.js';
import { knownAccel, resolveAccel } from '../engine/accel.js';
import { Engine } from '../engine/engine.js';
import { hostCpu } from '../engine/host-cpu.js';
import type { OfficialGuest, OfficialLookup, OfficialPacks } from '../engine/images/official.js';
import type { OnProgress } from '../engine/progress.js';
import { onProcessExit } from '../engine/reaper.js';
import { findQemu } from '../engine/vmm/qemu-binary.js';
import type { LaunchOptions } from '../engine/vmm/vm-process.js';
import { upload } from './download.js';
import type { PackManifest } from './manifest.js';
import { officialGuest } from './official-images.js';
import { writePack } from './pack.js';
import { byteProgress } from './progress.js';
import { fetchPack, PullCache, requireHttps, resolveRef, type PackSource } from './pull.js';
import { unpack, type PackHost, type UnpackOptions, type Unpacked } from './unpack.js';

export type InstallOptions = Omit<UnpackOptions, 'onProgress'>;
export type Pulled = Omit<Unpacked, 'manifest'> & { manifest?: PackManifest; ref: string; cached: boolean };

/**
 * The Hub: packs, unpacks, pulls and pushes the snapshots of an engine's store, and installs the
 * official packs the engine asks for (it is the engine's OfficialPacks).
 */
export class Hub implements OfficialPacks {
  constructor(private readonly engine: Engine) {}

  /** Writes `tag`, its chain and the images it runs on to a `.forkd.tar.zst` (src/hub/pack.ts). */
  pack(tag: string, out: string, onProgress: OnProgress = () => {}): ReturnType<typeof writePack> {
    return writePack(this.engine.snapshots, tag, out, byteProgress('pack', 'write', onProgress));
  }

  /**
   * Installs a pack, checked whole before anything becomes visible; refused if this host cannot
   * restore it. Builds nothing: where the accelerator needs a probe boot, the pack's images boot.
   */
  async unpack(file: string, options: InstallOptions = {}, onProgress: OnProgress = () => {}): Promise<Unpacked> {
    const { paths } = this.engine;
    const host: PackHost = {
      known: async (kernelSha256) => {
        const qemu = await findQemu();
        const verdict = await knownAccel(kernelSha256, paths, qemu);
        return verdict && { accel: verdict.accel, qemuVersion: qemu.version, cpu: hostCpu() };
      },
      // not memoised: the staged images go away with the staging dir; the verdict is cached on disk
      probe: async (guest) => {
        const qemu = await findQemu();
        const { accel } = await resolveAccel(guest, paths, qemu);
        return { accel, qemuVersion: qemu.version, cpu: hostCpu() };
      },
      retake: async (tag, meta) => {
        onProgress({ task: 'unpack', phase: 'snapshot', detail: `${tag}: taking it again on this host` });
        await this.engine.retake(tag, meta, onProgress);
      },
    };
    return unpack(file, paths, host, { ...options, onProgress: byteProgress('unpack', 'read', onProgress) });
  }

  /**
   * Installs a pack from a URL or `owner/name[@version]` (FORKD_HUB_URL's registry), checked
   * against the registry's sha256. A ref pulled before with the same sha256, whose snapshots are
   * still there, is not downloaded again (`cached: true`).
   */
  async pull(
    ref: string,
    options: InstallOptions & { httpsOnly?: boolean } = {},
    onProgress: OnProgress = () => {},
  ): Promise<Pulled> {
    const source = await resolveRef(ref);
    if (options.httpsOnly) requireHttps(source);
    return this.pullSource(source, options, onProgress);
  }

  /** pull, of a pack already located (a registry entry, an official pin). */
  private async pullSource(
    source: PackSource,
    options: InstallOptions & { httpsOnly?: boolean } = {},
    onProgress: OnProgress = () => {},
  ): Promise<Pulled> {
    const { httpsOnly = false, ...install } = options;
    const cache = new PullCache(this.engine.paths);
    const cachedTags = install.force || install.tag ? undefined : cache.lookup(source);
    if (cachedTags) return { ref: source.ref, cached: true, tags: cachedTags };
    const file = await fetchPack(cache, source, byteProgress('pull', 'download', onProgress), httpsOnly);
    try {
      const unpacked = await this.unpack(file, install, onProgress);
      await cache.record(source, unpacked.tags);
      return { ...unpacked, ref: source.ref, cached: false };
    } finally {
      await rm(file, { force: true });
    }
  }

  /** Packs `tag` and PUTs it to `url` as a stream (e.g. a presigned upload URL). */
  async push(tag: string, url: string, onProgress: OnProgress = () => {}): Promise<{ bytes: number; sha256: string }> {
    const tmp = this.engine.paths.tmp();
    await mkdir(tmp, { recursive: true });
    const file = join(tmp, `push-${process.pid}-${randomUUID()}.forkd.tar.zst`);
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

  /** The official images of `name`: its pinned pack, pulled and installed on first use (see official-images.ts). */
  guest(name: string, options: OfficialLookup): Promise<OfficialGuest | undefined> {
    const install = async (source: PackSource, tag: string, head: string) => {
      // a pull cache entry and a download of its own: `forkd pull forkd/NAME@V` installs the same
      // pack under its own tag, and must neither find this install nor share its download
      const own = { ...source, ref: `official-${source.ref}` };
      const r = await this.pullSource(own, { tag, force: true, head }, options.onProgress);
      const { meta } = await this.engine.snapshots.get(r.tags.at(-1)!);
      return { meta, ...(r.retaken ? { retaken: r.retaken } : {}) };
    };
    return officialGuest(this.engine.paths, name, install, options);
  }
}

/** An engine wired to a Hub for its official packs, and that Hub: how the CLI, the daemon and the library open one. */
export function openEngine(
  paths: StatePaths = new StatePaths(),
  options: { launch?: LaunchOptions } = {},
): { engine: Engine; hub: Hub } {
  const officialPacks: OfficialPacks = { guest: (name, lookup) => hub.guest(name, lookup) };
  const engine = new Engine(paths, { ...options, officialPacks });
  const hub = new Hub(engine);
  return { engine, hub };
}
