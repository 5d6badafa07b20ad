/**
 * The Actions cache for the job's built images (guest kernel, initramfs, recipe root filesystems):
 * the slow part of a cold start (a kernel build alone takes minutes). Snapshots are taken again
 * each run: a few seconds, and always valid for the runner's accelerator.
 */
import { isFeatureAvailable, restoreCache, saveCache } from '@actions/cache';
import * as core from '@actions/core';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, join, relative, resolve } from 'node:path';
import { errorMessage } from '../errors.js';
import type { Engine } from './engine-release.js';

/** Every file under `dir`, in a stable order. */
function files(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .map((name) => join(dir, name))
    .filter((path) => statSync(path).isFile())
    .sort();
}

/**
 * The cache key: the engine version and everything the images are built from (the kernel
 * config, the agent's source, the recipes used: by name from the engine, or ./paths in the
 * workspace), and the runner's OS image.
 */
export function imagesCacheKey(engine: Engine, recipes: string[]): string {
  const hash = createHash('sha256').update(engine.version);
  const dirs = [
    join(engine.root, 'native'),
    ...recipes.map((r) => (r.startsWith('./') ? resolve(r) : join(engine.root, 'recipes', r))),
  ];
  for (const dir of dirs) {
    hash.update(basename(dir));
    for (const path of files(dir)) hash.update(relative(dir, path)).update(readFileSync(path));
  }
  const os = process.env.ImageOS ?? `${process.platform}-${process.arch}`;
  return `forkd-images-${engine.version}-${os}-${hash.digest('hex').slice(0, 24)}`;
}

export const cachePaths = (home: string): string[] => [join(home, 'images')];

/** Restores the images; true on a hit. No cache service (not on GitHub, or disabled) is a miss. */
export async function restoreImages(home: string, key: string): Promise<boolean> {
  if (!isFeatureAvailable()) {
    core.info('forkd: no Actions cache service here: building the images');
    return false;
  }
  try {
    const hit = await restoreCache(cachePaths(home), key);
    core.info(hit ? `forkd: images restored from the cache (${key})` : `forkd: no cached images for ${key} yet`);
    return hit !== undefined;
  } catch (err) {
    core.warning(`forkd: the cache could not be restored (${errorMessage(err)}); building the images`);
    return false;
  }
}

/** Saves the images for the next run; never throws (the job's result does not depend on it). */
export async function saveImages(home: string, key: string): Promise<void> {
  if (!isFeatureAvailable()) return;
  try {
    await saveCache(cachePaths(home), key);
    core.info(`forkd: images saved to the cache (${key})`);
  } catch (err) {
    core.warning(`forkd: the images could not be saved to the cache: ${errorMessage(err)}`);
  }
}
