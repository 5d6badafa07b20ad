/**
 * The first entry of a pack: what it holds (every file with its size and sha256), the chain of
 * snapshots root first, and the facts a host must match to restore it.
 */
import { ForkdError } from '../errors.js';
import { validateTag } from '../engine/snapshot/tag.js';

export const PACK_FORMAT = 1;
export const MANIFEST_NAME = 'manifest.json';
/** A manifest larger than this is refused before it is parsed. */
export const MAX_MANIFEST_BYTES = 1024 * 1024;
/** The files a snapshot dir may hold in a pack. */
export const SNAPSHOT_FILES = ['meta.json', 'vmstate', 'memory.bin', 'memory.diff'] as const;
/** The image files a pack may carry, under images/<sha256>/. */
export const IMAGE_FILES = ['bzImage', 'initramfs.cpio', 'rootfs.ext4'] as const;

export interface PackFile {
  /** Path inside the pack: `<tag>/<file>` or `images/<sha256>/<file>`. */
  path: string;
  size: number;
  /** sha256 of the whole content, holes read as zeros (what `sha256sum` of the extracted file says). */
  sha256: string;
  /** Stored as a GNU sparse entry: only its data extents are in the pack. */
  sparse: boolean;
}

export interface PackLink {
  tag: string;
  parent: string | null;
  files: PackFile[];
}

/** The restore-time facts of the pack's snapshots; a host that differs is refused. */
export interface PackCompat {
  /** The guests' architecture (absent in packs from before it was recorded: x86_64). */
  arch?: string;
  accel: string;
  qemuVersion: string;
  machine: string;
  /** The host CPU of a KVM snapshot (absent under TCG). */
  cpu?: string;
  memoryMiB: number;
  /** The recipe (or `base`) the snapshot was made from: the way to rebuild it locally. */
  image: string;
  /** The images the snapshots were taken with: their build-input hash and their content sha256. */
  kernel: { hash: string; sha256: string };
  initrd: { hash: string; sha256: string };
  rootfs: { hash: string; sha256: string } | null;
}

export interface PackManifest {
  format: number;
  /** The head of the chain: the snapshot the pack is named after. */
  tag: string;
  created: string;
  engine: string;
  compat: PackCompat;
  /** Root first; the last link is `tag`. */
  chain: PackLink[];
  images: PackFile[];
}

function bad(why: string): ForkdError {
  return new ForkdError('FORKD_ERR_CORRUPT', `the pack's manifest is invalid: ${why}`, {
    hint: 'the pack is damaged or was not written by forkd pack; download or pack it again',
  });
}

const SHA256 = /^[0-9a-f]{64}$/;

function checkFile(file: PackFile, allowed: readonly string[], dir: string): void {
  if (typeof file?.path !== 'string' || !Number.isSafeInteger(file.size) || file.size < 0)
    throw bad(`a file entry is malformed: ${JSON.stringify(file).slice(0, 120)}`);
  if (typeof file.sha256 !== 'string' || !SHA256.test(file.sha256)) throw bad(`${file.path} has no valid sha256`);
  const name = file.path.slice(dir.length + 1);
  if (!file.path.startsWith(`${dir}/`) || !allowed.includes(name))
    throw bad(`${JSON.stringify(file.path)} is not a file a pack may hold`);
}

/**
 * Parses and checks a manifest before any file body is read: a format this forkd knows, safe tags,
 * a consistent chain, and only the file paths a pack may hold (no traversal, no duplicates).
 */
export function parseManifest(text: string): PackManifest {
  let m: PackManifest;
  try {
    m = JSON.parse(text) as PackManifest;
  } catch {
    throw bad('it is not JSON');
  }
  if (!Number.isInteger(m?.format)) throw bad('it has no format version');
  if (m.format > PACK_FORMAT) {
    throw new ForkdError(
      'FORKD_ERR_INCOMPATIBLE',
      `the pack has format ${m.format}; this forkd reads up to ${PACK_FORMAT}`,
      {
        hint: 'upgrade forkd-action, or rebuild the snapshot locally from its recipe',
      },
    );
  }
  if (!Array.isArray(m.chain) || !m.chain.length || !Array.isArray(m.images) || typeof m.compat !== 'object')
    throw bad('chain, images or compat is missing');
  validateTag(m.tag);
  const seen = new Set<string>();
  m.chain.forEach((link, i) => {
    validateTag(link?.tag);
    const parent = i === 0 ? null : m.chain[i - 1]!.tag;
    if (link.parent !== parent) throw bad(`link ${link.tag} names parent ${link.parent}, expected ${parent}`);
    if (!Array.isArray(link.files)) throw bad(`link ${link.tag} lists no files`);
    for (const file of link.files) checkFile(file, SNAPSHOT_FILES, link.tag);
    const names = link.files.map((f) => f.path.slice(link.tag.length + 1));
    const memory = i === 0 ? 'memory.bin' : 'memory.diff';
    for (const needed of ['meta.json', 'vmstate', memory]) {
      if (!names.includes(needed)) throw bad(`link ${link.tag} lacks ${needed}`);
    }
  });
  if (m.chain.at(-1)!.tag !== m.tag) throw bad(`the chain ends at ${m.chain.at(-1)!.tag}, not ${m.tag}`);
  for (const file of m.images) {
    const sha = file?.path?.split('/')[1] ?? '';
    if (!SHA256.test(sha) || file.sha256 !== sha)
      throw bad(`image ${JSON.stringify(file?.path)} is not named by its sha256`);
    checkFile(file, IMAGE_FILES, `images/${sha}`);
  }
  const carried = new Set(m.images.map((i) => i.sha256));
  for (const [what, image] of Object.entries({
    kernel: m.compat.kernel,
    initrd: m.compat.initrd,
    rootfs: m.compat.rootfs,
  })) {
    if (image === null && what === 'rootfs') continue;
    if (!carried.has(image?.sha256 ?? '')) throw bad(`its ${what} image is not in the pack`);
  }
  for (const file of [...m.chain.flatMap((l) => l.files), ...m.images]) {
    if (seen.has(file.path)) throw bad(`${file.path} is listed twice`);
    seen.add(file.path);
  }
  return m;
}
