/**
 * A guest's images from its official pack instead of a local build. The engine only asks; where
 * the packs come from (pins, pulls, installs) is the Hub's business (src/hub/official-images.ts),
 * handed to the engine when it is constructed.
 */
import { ForkdError } from '../../errors.js';
import type { OnProgress } from '../progress.js';
import type { SnapshotMeta } from '../snapshot/meta.js';
import type { BaseImage } from './base.js';

/** Kernel, initramfs and (for a recipe) root filesystem, with the hashes a snapshot records. */
export interface GuestImages extends BaseImage {
  rootfs?: { image: string; hash: string };
  /** The official pack they came from (`forkd/postgres@0.1.0`), if they did. */
  official?: string;
}

export interface OfficialGuest {
  /** The pack as the pull cache knows it (`forkd/postgres@0.1.0`). */
  ref: string;
  /** The tag its snapshot was installed under; it may have been removed since. */
  tag: string;
  images: GuestImages;
}

export interface OfficialLookup {
  onProgress?: OnProgress;
  /** Only an earlier install counts: nothing is fetched. */
  lookupOnly?: boolean;
  /** Why there is no official pack, for the caller to tell once a local build really starts. */
  onFallback?: (notice: string) => void;
}

/** Where official images come from; an engine without one builds everything here. */
export interface OfficialPacks {
  /** The official images of `name` (base or a packaged recipe), or undefined: the caller builds locally. */
  guest(name: string, options: OfficialLookup): Promise<OfficialGuest | undefined>;
}

/** The images a snapshot was taken with, as its meta records them. */
export function imagesOf(meta: SnapshotMeta): GuestImages {
  if (meta.vm.rootfs && !meta.image.rootfsHash)
    throw new ForkdError('FORKD_ERR_CORRUPT', `snapshot ${meta.tag} boots a root filesystem it records no hash of`, {
      hint: 'remove the snapshot (forkd rmi) and take it again, or download its pack again',
    });
  return {
    kernel: meta.vm.kernel,
    initrd: meta.vm.initrd,
    kernelHash: meta.image.kernelHash,
    initrdHash: meta.image.initrdHash,
    reused: true,
    ...(meta.vm.rootfs ? { rootfs: { image: meta.vm.rootfs, hash: meta.image.rootfsHash! } } : {}),
  };
}
