/**
 * Official images for the engine (its OfficialPacks): the pinned pack of a guest is pulled once,
 * installed as snapshot `official-<name>`, and its images recorded in the image cache
 * (images/official/<name>-<sha256>/guest.json) for every later use.
 */
import { existsSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ForkdError, errorMessage } from '../errors.js';
import type { StatePaths } from '../common/state-dir.js';
import { artifactDir, ensureArtifact } from '../engine/images/cache.js';
import { imagesOf, type OfficialGuest, type OfficialLookup } from '../engine/images/official.js';
import type { SnapshotMeta } from '../engine/snapshot/meta.js';
import { officialSource, officialTag } from './official.js';
import type { PackSource } from './pull.js';

/** How a pack is installed (pull, and unpack or take its snapshot again here). */
export type InstallPack = (
  source: PackSource,
  tag: string,
  head: string,
) => Promise<{ meta: SnapshotMeta; retaken?: { reason: string; ms: number } }>;

const RECORD = 'guest.json';

/** Fetch failures that fall back to the local build; anything else (a pack that lies) is an error. */
const FALLBACK_CODES = new Set(['FORKD_ERR_UNREACHABLE', 'FORKD_ERR_NOT_FOUND']);

/**
 * The official images of `name` (base or a packaged recipe), pulled on first use; undefined when
 * there is no pin for it or its pack cannot be fetched, and the caller builds locally. A pack that
 * cannot be fetched says so at once; no pin is routine (a development checkout), so `onFallback`
 * gets that notice, for the caller to show once a build really starts. With `lookupOnly`, only an
 * earlier pull counts.
 */
export async function officialGuest(
  paths: StatePaths,
  name: string,
  install: InstallPack,
  options: OfficialLookup = {},
): Promise<OfficialGuest | undefined> {
  const notice = (detail: string) => options.onProgress?.({ task: 'official pack', phase: name, detail });
  const found = officialSource(name);
  if ('reason' in found) {
    if (found.reason !== 'FORKD_BUILD=local') options.onFallback?.(`${found.reason}: building locally`);
    return undefined;
  }
  const { source, pin } = found;
  const key = `${name}-${pin.sha256.slice(0, 24)}`;
  const record = join(artifactDir(paths, 'official', key), RECORD);
  if (existsSync(record)) {
    const guest = JSON.parse(await readFile(record, 'utf8')) as OfficialGuest;
    const { kernel, initrd, rootfs } = guest.images;
    if ([kernel, initrd, rootfs?.image].every((file) => file === undefined || existsSync(file))) return guest;
    await rm(artifactDir(paths, 'official', key), { recursive: true, force: true }); // its images were removed
  }
  if (options.lookupOnly) return undefined;
  try {
    const tag = officialTag(name);
    const artifact = await ensureArtifact(
      paths,
      'official',
      key,
      async (staging) => {
        notice(`pulling ${source.ref} (${(pin.size / 1024 ** 2).toFixed(0)} MiB) instead of building`);
        const { meta, retaken } = await install(source, tag, name);
        if (retaken)
          notice(`${source.ref}: snapshot taken again here in ${(retaken.ms / 1000).toFixed(1)} s: ${retaken.reason}`);
        const guest: OfficialGuest = { ref: source.ref, tag, images: { ...imagesOf(meta), official: source.ref } };
        await writeFile(join(staging, RECORD), `${JSON.stringify(guest, null, 2)}\n`);
      },
      options.onProgress ? { onProgress: options.onProgress } : {},
    );
    return JSON.parse(await readFile(join(artifact.dir, RECORD), 'utf8')) as OfficialGuest;
  } catch (err) {
    if (err instanceof ForkdError && FALLBACK_CODES.has(err.code)) {
      notice(`${source.ref} could not be fetched (${errorMessage(err)}): building locally`);
      return undefined;
    }
    throw err;
  }
}
