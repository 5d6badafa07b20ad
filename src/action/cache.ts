/**
 * The Actions cache for the slow parts of a cold start, as two entries: the built images (guest
 * kernel, initramfs, recipe root filesystems; a kernel build alone takes minutes) and the recipe
 * snapshots taken from them (booting and warming a parent: seconds under KVM, a minute under
 * TCG). A snapshot restores only where it was taken and over the very images it was taken with,
 * so its key names the images' build, the accelerator, the QEMU binary and, under KVM (`-cpu
 * host`), the host CPU's flags. Snapshots refer to the images by path: FORKD_HOME must be the
 * same path each run (RUNNER_TEMP/forkd is).
 */
import { isFeatureAvailable, restoreCache, saveCache } from '@actions/cache';
import * as core from '@actions/core';
import { randomUUID } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { basename, join, relative, resolve } from 'node:path';
import { hashInputs } from '../engine/images/cache.js';
import { errorMessage } from '../errors.js';
import type { Engine } from './engine-release.js';

export interface CacheEntry {
  what: 'images' | 'snapshots';
  key: string;
  paths: string[];
}

/** Every file under `dir`, in a stable order. */
function files(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .map((name) => join(dir, name))
    .filter((path) => statSync(path).isFile())
    .sort();
}

const runnerOs = () => process.env.ImageOS ?? `${process.platform}-${process.arch}`;

/**
 * The images: keyed by the engine version, everything they are built from (the kernel config,
 * the agent's source, the recipes used: by name from the engine, or ./paths in the workspace)
 * and the runner's OS image.
 */
export function imagesEntry(home: string, engine: Engine, recipes: string[]): CacheEntry {
  const dirs = [
    join(engine.root, 'native'),
    ...recipes.map((r) => (r.startsWith('./') ? resolve(r) : join(engine.root, 'recipes', r))),
  ];
  const hash = hashInputs([
    engine.version,
    ...dirs.flatMap((dir) => [
      basename(dir),
      ...files(dir).flatMap((path) => [relative(dir, path), readFileSync(path)]),
    ]),
  ]);
  const key = `forkd-images-${engine.version}-${runnerOs()}-${hash}`;
  return { what: 'images', key, paths: [join(home, 'images')] };
}

/**
 * Which build of the images this is: read from restored images, a new one for images built
 * here. The snapshots' cache key includes it: a snapshot must restore over the very disk images
 * it was taken with, and a rebuilt root filesystem differs byte for byte.
 */
export function imagesBuildId(home: string, restored: boolean): string | undefined {
  const file = join(home, 'images', 'forkd-build-id');
  if (restored) return existsSync(file) ? readFileSync(file, 'utf8').trim() : undefined;
  const id = randomUUID();
  writeFileSync(file, `${id}\n`);
  return id;
}

/** The snapshots of `tags`, taken from one build of the images on this accelerator, QEMU and (KVM) CPU. */
export function snapshotsEntry(
  home: string,
  imagesBuildId: string,
  tags: string[],
  host: { accel: string; qemu: string },
): CacheEntry {
  const cpuFlags = /^flags\s*:(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '';
  const hash = hashInputs([imagesBuildId, ...tags, host.qemu, host.accel === 'kvm' ? cpuFlags : '']);
  const key = `forkd-snapshots-${host.accel}-${runnerOs()}-${hash}`;
  return { what: 'snapshots', key, paths: tags.map((tag) => join(home, 'snapshots', tag)) };
}

/** Whether this runner has a cache service (not so off GitHub, or on GHES without one). */
export function cacheServiceAvailable(): boolean {
  if (isFeatureAvailable()) return true;
  core.info('forkd: no Actions cache service here: images and snapshots are made afresh');
  return false;
}

/** Restores an entry; true on a hit. */
export async function restoreEntry(entry: CacheEntry): Promise<boolean> {
  try {
    const hit = await restoreCache(entry.paths, entry.key);
    core.info(
      hit
        ? `forkd: ${entry.what} restored from the cache (${entry.key})`
        : `forkd: no cached ${entry.what} for ${entry.key} yet`,
    );
    return hit !== undefined;
  } catch (err) {
    core.warning(
      `forkd: the ${entry.what} could not be restored from the cache (${errorMessage(err)}); making them afresh`,
    );
    return false;
  }
}

/** Saves an entry for the next run; never throws (the job's result does not depend on it). */
export async function saveEntry(entry: CacheEntry): Promise<void> {
  try {
    await saveCache(entry.paths, entry.key);
    core.info(`forkd: ${entry.what} saved to the cache (${entry.key})`);
  } catch (err) {
    core.warning(`forkd: the ${entry.what} could not be saved to the cache: ${errorMessage(err)}`);
  }
}
