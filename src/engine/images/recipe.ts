import { execFileSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { mkdtemp, readFile } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { ForkdError } from '../../errors.js';
import { requireTool, runTool, runToolStreaming } from '../host-tools.js';
import { packageRoot } from '../package-root.js';
import { onProcessExit } from '../reaper.js';
import type { StatePaths } from '../state-dir.js';
import { validatePorts } from '../vmm/ports.js';
import { ensureArtifact, hashInputs, type Artifact, type BuildOptions } from './cache.js';

const BUILDER_VERSION = 'rootfs-v1';
const SUITE = 'bookworm';
const NAME_PATTERN = /^[a-z0-9][a-z0-9-]{0,40}$/;
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
  /** Run in a chroot of the tree at build time (as root, on the host). */
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

function mirror(): string {
  return process.env.FORKD_DEBIAN_MIRROR ?? 'http://deb.debian.org/debian';
}

/**
 * The recipe's ext4 root filesystem: debootstrap (minbase + packages), the recipe's files, its
 * build command in a chroot, then `mke2fs -d` (no loop mount). Cached by the hash of the recipe.
 */
export async function ensureRecipeImage(
  paths: StatePaths,
  recipe: Recipe,
  options: BuildOptions = {},
): Promise<Artifact & { image: string }> {
  const sources = await Promise.all(Object.values(recipe.files).map((f) => readFile(join(recipe.dir, f))));
  // only what goes into the image: a new warm-up, ready check or memory size reuses it
  const { packages, files, build, imageMiB } = recipe;
  const key = hashInputs([
    BUILDER_VERSION,
    SUITE,
    mirror(),
    JSON.stringify({ packages, files, build, imageMiB }),
    ...sources,
  ]);
  const artifact = await ensureArtifact(
    paths,
    `rootfs-${recipe.name}`,
    key,
    async (staging) => {
      if (process.getuid?.() !== 0) {
        throw new ForkdError(
          'FORKD_ERR_BUILD',
          `building the ${recipe.name} root filesystem needs root (debootstrap, chroot)`,
          {
            hint: `run it once as root: sudo npx forkd build ${recipe.name} (the image is cached after)`,
          },
        );
      }
      const debootstrap = requireTool('debootstrap', 'debootstrap');
      const mke2fs = requireTool('mke2fs', 'e2fsprogs');
      const tree = await mkdtemp(
        join(existsSync('/dev/shm') ? '/dev/shm' : paths.tmp(), `forkd-rootfs-${recipe.name}-`),
      );
      chmodSync(tree, 0o755); // it becomes the guest's "/": mkdtemp's 0700 would lock out non-root users
      const proc = join(tree, 'proc');
      const cleanup = () => {
        try {
          execFileSync('umount', [proc], { stdio: 'ignore' }); // only mounted if the build was interrupted
        } catch {
          // not mounted
        }
        rmSync(tree, { recursive: true, force: true });
      };
      const unregister = onProcessExit(cleanup);
      const task = `rootfs ${recipe.name}`;
      /** Runs one build step; a failure names the step, keeps the tool's output tail and says what to check. */
      const step = async (phase: string, hint: string, run: () => Promise<unknown>, detail?: string) => {
        options.onProgress?.({ task, phase, ...(detail ? { detail } : {}) });
        try {
          await run();
        } catch (err) {
          const message = err instanceof Error ? err.message : String(err);
          throw new ForkdError('FORKD_ERR_BUILD', `recipe ${recipe.name}: step ${phase} failed: ${message}`, {
            hint,
            cause: err,
          });
        }
      };
      try {
        let lines = 0;
        await step(
          'debootstrap',
          `check that every package in ${recipe.dir}/recipe.json exists in Debian ${SUITE} (apt-cache policy NAME) and that ${mirror()} is reachable (FORKD_DEBIAN_MIRROR)`,
          () =>
            runToolStreaming(
              debootstrap,
              [
                '--variant=minbase',
                ...(recipe.packages.length ? [`--include=${recipe.packages.join(',')}`] : []),
                SUITE,
                tree,
                mirror(),
              ],
              {
                onLine: (line) =>
                  options.onProgress?.({
                    task,
                    phase: 'debootstrap',
                    done: ++lines,
                    total: Math.max(400, lines + 40), // line counts vary with the package set
                    detail: line.slice(0, 60),
                  }),
              },
            ),
          `${SUITE} + ${recipe.packages.join(' ') || 'nothing'}`,
        );
        await step('files', `the files named in ${recipe.dir}/recipe.json must exist next to it`, async () => {
          for (const [target, source] of Object.entries(recipe.files))
            cpSync(join(recipe.dir, source), join(tree, target));
        });
        const build = recipe.build;
        if (build) {
          await step('build', `the recipe's build command failed in a chroot; its output is above`, async () => {
            await runTool('mount', ['-t', 'proc', 'proc', proc]);
            try {
              await runToolStreaming('chroot', [tree, '/bin/sh', '-c', build], {});
            } finally {
              await runTool('umount', [proc]); // before mke2fs copies the tree
            }
          });
        }
        rmSync(join(tree, 'var/cache/apt/archives'), { recursive: true, force: true });
        rmSync(join(tree, 'var/lib/apt/lists'), { recursive: true, force: true });
        await step(
          'mke2fs',
          `raise "image_mib" in ${recipe.dir}/recipe.json if the tree does not fit`,
          () =>
            runTool(mke2fs, [
              '-q',
              '-F',
              '-t',
              'ext4',
              '-L',
              'forkd',
              '-d',
              tree,
              join(staging, 'rootfs.ext4'),
              `${recipe.imageMiB}M`,
            ]),
          `${recipe.imageMiB} MiB`,
        );
      } finally {
        cleanup();
        unregister();
      }
    },
    options,
  );
  return { ...artifact, image: join(artifact.dir, 'rootfs.ext4') };
}
