import { existsSync, lstatSync, readdirSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { RECIPE_NAME_PATTERN_SOURCE } from '../../api/schemas.js';
import { ForkdError } from '../../errors.js';
import { packageRoot } from '../../common/package-root.js';
import type { StatePaths } from '../../common/state-dir.js';
import { validatePorts } from '../vmm/ports.js';
import { ensureArtifact, hashInputs, type Artifact, type BuildOptions } from './cache.js';
import { buildRootfs, debianMirror, SUITE } from './rootfs.js';

/** rootfs-v3: built by mmdebstrap (rootless), no longer debootstrap + chroot as root. */
const BUILDER_VERSION = 'rootfs-v3';
const NAME_PATTERN = new RegExp(RECIPE_NAME_PATTERN_SOURCE);
const DEBIAN_PACKAGE = /^[a-z0-9][a-z0-9+.-]+$/;
const FIELDS = [
  'description',
  'base',
  'packages',
  'files',
  'build',
  'warmup',
  'ready',
  'ready_timeout_s',
  'prime',
  'ports',
  'memory_mib',
  'image_mib',
];

/**
 * What the guest's root is: a Debian bookworm tree built into an ext4 image, or `none`: the
 * embedded initramfs (busybox) as it is, with no image to build.
 */
export type RecipeBase = 'debian-bookworm' | 'none';

/** recipes/<name>/recipe.json: a Debian root filesystem plus what the parent does before its snapshot. */
export interface Recipe {
  name: string;
  dir: string;
  description: string;
  base: RecipeBase;
  packages: string[];
  /** Image path -> file in the recipe dir, copied into the tree before the build command. */
  files: Record<string, string>;
  /** Run in a chroot of the tree at build time (as root of the build's namespace). */
  build: string | null;
  /** Run in the parent VM before the snapshot. */
  warmup: string | null;
  /** Polled in the parent after the warm-up until it exits 0, for up to readyTimeoutMs. */
  ready: string | null;
  readyTimeoutMs: number;
  /** Run in each warm-pool spare after its restore, off the fork's critical path (see SnapshotMeta.prime). */
  prime: string | null;
  ports: number[];
  memoryMiB: number;
  imageMiB: number;
}

export function recipesDir(): string {
  return join(packageRoot, 'recipes');
}

/** A recipe by name (recipes/<name>/) or by path to its directory (anything with a slash). */
export function loadRecipe(ref: string): Recipe {
  if (!ref) throw new ForkdError('FORKD_ERR_BAD_INPUT', 'name a recipe', { hint: 'for example: postgres' });
  const dir = ref.includes('/') ? resolve(ref) : join(recipesDir(), ref);
  const name = basename(dir);
  const bad = (what: string) =>
    new ForkdError('FORKD_ERR_BAD_INPUT', `recipe ${name}: ${what}`, {
      hint: 'the recipe format is in recipes/README.md',
    });
  if (!NAME_PATTERN.test(name))
    throw new ForkdError('FORKD_ERR_BAD_INPUT', `invalid recipe name ${JSON.stringify(name)}`, {
      hint: 'recipe names are lowercase letters, digits and dashes',
    });
  const file = join(dir, 'recipe.json');
  if (!existsSync(file)) {
    throw new ForkdError('FORKD_ERR_NOT_FOUND', `no recipe ${ref} (no ${file})`, {
      hint: `name one of ${readdirSync(recipesDir(), { withFileTypes: true })
        .filter((e) => e.isDirectory())
        .map((e) => e.name)
        .join(', ')}, or give the path of a directory with a recipe.json`,
    });
  }
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch (err) {
    throw bad(`${file} is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw bad('recipe.json must hold an object');
  const unknown = Object.keys(raw).filter((k) => !FIELDS.includes(k));
  if (unknown.length) throw bad(`unknown field ${unknown.join(', ')} (known: ${FIELDS.join(', ')})`);
  const str = (key: string) => {
    if (raw[key] === undefined || raw[key] === null) return null;
    if (typeof raw[key] !== 'string') throw bad(`"${key}" must be a string`);
    return raw[key];
  };
  const mib = (key: string, fallback: number, min: number, max: number) => {
    const value = raw[key] ?? fallback;
    if (!Number.isInteger(value) || (value as number) < min || (value as number) > max)
      throw bad(`"${key}" must be an integer from ${min} to ${max}`);
    return value as number;
  };
  const base = (raw.base ?? 'debian-bookworm') as RecipeBase;
  if (base !== 'debian-bookworm' && base !== 'none') throw bad('"base" must be "debian-bookworm" or "none"');
  const packages = raw.packages ?? [];
  if (!Array.isArray(packages) || packages.some((p) => typeof p !== 'string' || !DEBIAN_PACKAGE.test(p)))
    throw bad(`"packages" must be a list of Debian package names (got ${JSON.stringify(packages)})`);
  const files = raw.files ?? {};
  if (typeof files !== 'object' || files === null || Array.isArray(files)) throw bad('"files" must be an object');
  for (const [target, source] of Object.entries(files)) {
    if (typeof source !== 'string' || !target.startsWith('/'))
      throw bad(`file ${target}: absolute image path -> file name`);
    if (target.split('/').includes('..') || source.split('/').includes('..') || source.startsWith('/'))
      throw bad(`file ${target} <- ${source} leaves its directory`);
    // a link could carry anything the user can read (a key, a token) into the image and its packs
    const real = join(dir, source);
    if (!existsSync(real)) throw bad(`file ${target} <- ${source}: ${real} does not exist`);
    if (!lstatSync(real).isFile())
      throw bad(`file ${target} <- ${source}: ${real} is not a regular file (links are refused)`);
  }
  const build = str('build');
  if (base === 'none' && (packages.length || Object.keys(files).length || build))
    throw bad('base "none" boots the embedded initramfs as it is: it takes no packages, files or build');
  return {
    name,
    dir,
    description: str('description') ?? '',
    base,
    packages: packages as string[],
    files: files as Record<string, string>,
    build,
    warmup: str('warmup'),
    ready: str('ready'),
    readyTimeoutMs: mib('ready_timeout_s', 120, 1, 3600) * 1000,
    prime: str('prime'),
    ports: validatePorts(raw.ports ?? []),
    memoryMiB: mib('memory_mib', 256, 64, 16384),
    imageMiB: mib('image_mib', 1024, 64, 65536),
  };
}

/** The hash of what goes into a recipe's image: its cache key, and what an official pack's image is checked by. */
export async function recipeImageKey(recipe: Recipe): Promise<string> {
  const sources = await Promise.all(Object.values(recipe.files).map((f) => readFile(join(recipe.dir, f))));
  // only what goes into the image: a new warm-up, ready check or memory size reuses it
  const { packages, files, build, imageMiB } = recipe;
  return hashInputs([
    BUILDER_VERSION,
    SUITE,
    debianMirror(),
    JSON.stringify({ packages, files, build, imageMiB }),
    ...sources,
  ]);
}

/** True for a recipe shipped in recipes/ (one an official pack may exist for), not a directory of the user's. */
export function isPackagedRecipe(recipe: Recipe): boolean {
  return recipe.dir === join(recipesDir(), recipe.name);
}

/**
 * The recipe's ext4 root filesystem (src/engine/images/rootfs.ts builds it, without root where
 * user namespaces allow). Cached by the hash of what goes into the image.
 */
export async function ensureRecipeImage(
  paths: StatePaths,
  recipe: Recipe,
  options: BuildOptions = {},
): Promise<Artifact & { image: string }> {
  const key = await recipeImageKey(recipe);
  const artifact = await ensureArtifact(
    paths,
    `rootfs-${recipe.name}`,
    key,
    (staging) => buildRootfs(recipe, join(staging, 'rootfs.ext4'), options),
    options,
  );
  return { ...artifact, image: join(artifact.dir, 'rootfs.ext4') };
}
