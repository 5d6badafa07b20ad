import { execFileSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, readFileSync, rmSync } from 'node:fs';
import { mkdtemp, readFile } from 'node:fs/promises';
import { join } from 'node:path';
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

/** recipes/<name>/recipe.json: a Debian root filesystem plus what the parent does before its snapshot. */
export interface Recipe {
  name: string;
  dir: string;
  description: string;
  packages: string[];
  /** Image path -> file in the recipe dir, copied into the tree before the build command. */
  files: Record<string, string>;
  /** Run in a chroot of the tree at build time (as root, on the host). */
  build: string | null;
  /** Run in the parent VM before the snapshot. */
  warmup: string | null;
  /** Polled in the parent after the warm-up until it exits 0. */
  ready: string | null;
  ports: number[];
  memoryMiB: number;
  imageMiB: number;
}

export function recipesDir(): string {
  return join(packageRoot, 'recipes');
}

export function loadRecipe(name: string): Recipe {
  if (!NAME_PATTERN.test(name))
    throw new ForkdError('FORKD_ERR_BAD_INPUT', `invalid recipe name ${JSON.stringify(name)}`);
  const dir = join(recipesDir(), name);
  const file = join(dir, 'recipe.json');
  if (!existsSync(file)) {
    throw new ForkdError('FORKD_ERR_NOT_FOUND', `no recipe named ${name}`, {
      hint: `recipes live in ${recipesDir()}/<name>/recipe.json`,
    });
  }
  const raw = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  const str = (key: string) => (typeof raw[key] === 'string' ? (raw[key] as string) : null);
  const files = (raw.files ?? {}) as Record<string, string>;
  for (const [target, source] of Object.entries(files)) {
    if (target.split('/').includes('..') || source.split('/').includes('..') || source.startsWith('/')) {
      throw new ForkdError('FORKD_ERR_BAD_INPUT', `recipe ${name}: file ${target} <- ${source} leaves its directory`);
    }
  }
  return {
    name,
    dir,
    description: str('description') ?? '',
    packages: Array.isArray(raw.packages) ? (raw.packages as string[]) : [],
    files,
    build: str('build'),
    warmup: str('warmup'),
    ready: str('ready'),
    ports: validatePorts(raw.ports ?? []),
    memoryMiB: Number(raw.memory_mib ?? 256),
    imageMiB: Number(raw.image_mib ?? 1024),
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
  const key = hashInputs([BUILDER_VERSION, SUITE, mirror(), readFileSync(join(recipe.dir, 'recipe.json')), ...sources]);
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
      try {
        let lines = 0;
        options.onProgress?.({
          task,
          phase: 'debootstrap',
          detail: `${SUITE} + ${recipe.packages.join(' ') || 'nothing'}`,
        });
        await runToolStreaming(
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
        );
        for (const [target, source] of Object.entries(recipe.files))
          cpSync(join(recipe.dir, source), join(tree, target));
        if (recipe.build) {
          options.onProgress?.({ task, phase: 'build' });
          await runTool('mount', ['-t', 'proc', 'proc', proc]);
          try {
            await runTool('chroot', [tree, '/bin/sh', '-c', recipe.build]);
          } finally {
            await runTool('umount', [proc]); // before mke2fs copies the tree
          }
        }
        rmSync(join(tree, 'var/cache/apt/archives'), { recursive: true, force: true });
        rmSync(join(tree, 'var/lib/apt/lists'), { recursive: true, force: true });
        options.onProgress?.({ task, phase: 'mke2fs', detail: `${recipe.imageMiB} MiB` });
        await runTool(mke2fs, [
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
        ]);
      } finally {
        cleanup();
        unregister();
      }
    },
    options,
  );
  return { ...artifact, image: join(artifact.dir, 'rootfs.ext4') };
}
