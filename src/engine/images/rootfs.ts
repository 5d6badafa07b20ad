import { createWriteStream, rmSync, statfsSync } from 'node:fs';
import { chmod, mkdtemp, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { pack as tarPack } from 'tar-stream';
import { ForkdError } from '../../errors.js';
import { requireTool, runToolStreaming, which } from '../host-tools.js';
import { onProcessExit } from '../reaper.js';
import type { BuildOptions } from './cache.js';
import type { Recipe } from './recipe.js';
import { resolveRootfsMode, type RootfsMode } from './rootfs-privilege.js';

export const SUITE = 'bookworm';

export function debianMirror(): string {
  return process.env.FORKD_DEBIAN_MIRROR ?? 'http://deb.debian.org/debian';
}

/** A Debian tree with a few packages is about 1 GB while it is built: tmpfs when it has room. */
const TMPFS_NEEDED_BYTES = 3 * 1024 ** 3;

function scratchParent(): string {
  try {
    const fs = statfsSync('/dev/shm');
    if (fs.bavail * fs.bsize >= TMPFS_NEEDED_BYTES) return '/dev/shm';
  } catch {
    // no /dev/shm
  }
  return tmpdir();
}

const quote = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;

type Step = 'bootstrap' | 'files' | 'build' | 'mke2fs';

function hints(recipe: Recipe): Record<Step, string> {
  return {
    bootstrap: `check that every package in ${recipe.dir}/recipe.json exists in Debian ${SUITE} (apt-cache policy NAME) and that ${debianMirror()} is reachable (FORKD_DEBIAN_MIRROR)`,
    files: `the files named in ${recipe.dir}/recipe.json must exist next to it`,
    build: "the recipe's build command failed in a chroot of the new tree; its output is above",
    mke2fs: `raise "image_mib" in ${recipe.dir}/recipe.json if the tree does not fit`,
  };
}

/**
 * The recipe's files as a tar of root-owned files with their modes, and no directory entries, so
 * that unpacking it over the tree changes no directory's owner or mode.
 */
async function writeFilesTar(recipe: Recipe, out: string): Promise<void> {
  const tar = tarPack();
  const written = pipeline(tar, createWriteStream(out));
  for (const [target, source] of Object.entries(recipe.files)) {
    const path = join(recipe.dir, source);
    const [data, info] = await Promise.all([readFile(path), stat(path)]);
    tar.entry({ name: target.slice(1), mode: info.mode & 0o7777, uid: 0, gid: 0, size: data.length }, data);
  }
  tar.finalize();
  await written;
}

/** The step a line of mmdebstrap's output starts (it announces each hook before running it). */
function stepOf(line: string): Step | undefined {
  if (!line.startsWith('I: running')) return undefined;
  if (line.includes('tar-in')) return 'files';
  if (line.includes('forkd-build.sh')) return 'build';
  if (line.includes('mke2fs')) return 'mke2fs';
  return undefined;
}

/**
 * Builds a recipe's ext4 root filesystem into `image` with one mmdebstrap run: Debian minbase
 * plus the recipe's packages, its files, its build command in a chroot of the tree, then
 * `mke2fs -d` of the tree, all inside mmdebstrap's namespace so the image keeps the tree's owners.
 * As an ordinary user this runs in a user namespace (no root, no loop mounts); the image file is
 * opened here and handed in as fd 3, so it stays ours.
 */
export async function buildRootfs(recipe: Recipe, image: string, options: BuildOptions = {}): Promise<void> {
  const mode: RootfsMode = await resolveRootfsMode();
  const mmdebstrap = requireTool('mmdebstrap', 'mmdebstrap');
  const mke2fs = requireTool('mke2fs', 'e2fsprogs');
  const parent = scratchParent();
  const stage = await mkdtemp(join(parent, `forkd-recipe-${recipe.name}-`));
  const unregister = onProcessExit(() => rmSync(stage, { recursive: true, force: true }));
  const task = `rootfs ${recipe.name}`;
  let step: Step = 'files';
  const fail = (err: unknown): never => {
    const message = err instanceof Error ? err.message : String(err);
    throw new ForkdError('FORKD_ERR_BUILD', `recipe ${recipe.name}: step ${step} failed: ${message}`, {
      hint: hints(recipe)[step],
      cause: err,
    });
  };
  const file = await open(image, 'w', 0o644);
  try {
    // mmdebstrap's special hooks split their arguments on blanks
    if (/\s/.test(stage)) throw new Error(`the scratch dir ${stage} has a blank in its path: set TMPDIR`);
    const hooks: string[] = [];
    if (Object.keys(recipe.files).length) {
      options.onProgress?.({ task, phase: 'files' });
      await writeFilesTar(recipe, join(stage, 'files.tar')).catch(fail);
      hooks.push(`tar-in ${join(stage, 'files.tar')} /`);
    }
    if (recipe.build) {
      await writeFile(join(stage, 'forkd-build.sh'), recipe.build);
      hooks.push(`upload ${join(stage, 'forkd-build.sh')} /forkd-build.sh`);
      hooks.push('chroot "$1" /bin/sh /forkd-build.sh && rm -f "$1/forkd-build.sh"');
    }
    // inside an unshared namespace our own uid is not mapped: the image is reached through the fd
    const target = mode === 'unshare' ? '/proc/self/fd/3' : image;
    if (mode === 'unshare') await file.chmod(0o666);
    // mmdebstrap has /proc, /sys and /dev mounted in the tree: a non-recursive bind of it, in a
    // mount namespace of the hook's own, shows mke2fs the tree without them
    const makeImage = `mount --bind "$1" "$1/mnt" && exec ${quote(mke2fs)} -q -F -t ext4 -L forkd -d "$1/mnt" ${quote(target)} ${recipe.imageMiB}M`;
    hooks.push(
      'find "$1/var/cache/apt/archives" "$1/var/lib/apt/lists" -type f -delete && mkdir -p "$1/mnt" && ' +
        `${quote(requireTool('unshare', 'util-linux'))} --mount sh -c ${quote(makeImage)} sh "$1"`,
    );
    const args = [
      `--mode=${mode === 'sudo' ? 'root' : mode}`,
      '--variant=minbase',
      '--format=null',
      ...(recipe.packages.length ? [`--include=${recipe.packages.join(',')}`] : []),
      ...hooks.map((hook) => `--customize-hook=${hook}`),
      SUITE,
      '/dev/null',
      debianMirror(),
    ];
    const env = { ...process.env, TMPDIR: parent };
    const command =
      mode === 'sudo'
        ? [requireTool('sudo', 'sudo'), '-n', 'env', `TMPDIR=${parent}`, mmdebstrap, ...args]
        : [mmdebstrap, ...args];
    // mmdebstrap removes its tree when told to stop: make sure it is told if we die first
    const setpriv = which('setpriv');
    const [bin, ...argv] = setpriv ? [setpriv, '--pdeathsig', 'TERM', '--', ...command] : command;
    step = 'bootstrap';
    let lines = 0;
    options.onProgress?.({
      task,
      phase: step,
      detail: `${SUITE} + ${recipe.packages.join(' ') || 'nothing'} (${mode})`,
    });
    await runToolStreaming(bin!, argv, {
      cwd: '/', // the namespace's root may not enter the caller's directory (a user's 0700 project)
      env,
      fd3: file.fd,
      onLine: (line) => {
        step = stepOf(line) ?? step;
        options.onProgress?.({
          task,
          phase: step,
          done: ++lines,
          total: Math.max(400, lines + 40), // line counts vary with the package set
          detail: line.slice(0, 60),
        });
      },
    }).catch(fail);
    await chmod(image, 0o644);
  } finally {
    await file.close();
    await rm(stage, { recursive: true, force: true });
    unregister();
  }
}
