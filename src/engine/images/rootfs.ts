import { spawnSync } from 'node:child_process';
import { createWriteStream, readFileSync, rmSync, statfsSync } from 'node:fs';
import { chmod, mkdtemp, open, readFile, rm, stat, writeFile, type FileHandle } from 'node:fs/promises';
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
  if (line.includes('forkd-files.tar')) return 'files';
  if (line.includes('forkd-build.sh')) return 'build';
  return undefined;
}

/**
 * In its user namespace mmdebstrap binds /dev/shm into the tree without its submounts, which the
 * kernel refuses while anything is mounted below /dev/shm (EINVAL, "wrong fs type"): say so first.
 */
function refuseMountsUnderDevShm(): void {
  const below = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((line) => line.split(' ')[4] ?? '')
    .filter((point) => point.startsWith('/dev/shm/'));
  if (below.length)
    throw new ForkdError(
      'FORKD_ERR_BUILD',
      `a build without root cannot bind /dev/shm while ${below[0]} is mounted under it`,
      {
        hint: `unmount ${below.join(', ')}, or build as root (FORKD_ROOTFS_MODE=sudo)`,
      },
    );
}

/** Tools that run as root through sudo come from the system's directories, not the caller's PATH. */
const SYSTEM_PATH = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' };

/**
 * Runs commands in the build's privilege: as root, through `sudo -n`, or (unshare) inside
 * mmdebstrap's user namespace, where the tree's owners are the ones it was built with.
 */
function privileged(mode: RootfsMode) {
  const tool = (name: string, pkg: string) =>
    mode === 'sudo' ? (which(name, SYSTEM_PATH) ?? requireTool(name, pkg)) : requireTool(name, pkg);
  const mmdebstrap = tool('mmdebstrap', 'mmdebstrap');
  const prefix =
    mode === 'sudo' ? [requireTool('sudo', 'sudo'), '-n'] : mode === 'unshare' ? [mmdebstrap, '--unshare-helper'] : [];
  return {
    mmdebstrap,
    tool,
    /** argv for a command in the namespace (unshare), as root (sudo) or as it is (root). */
    argv: (command: string[]) => [...prefix, ...command],
  };
}

/**
 * Builds a recipe's ext4 root filesystem into `image`: mmdebstrap makes a Debian minbase tree
 * with the recipe's packages, unpacks its files and runs its build command in a chroot of it,
 * and cleans it up; then `mke2fs -d` makes the image of the tree and the tree is removed, both
 * with the privilege the tree was made with, so the image keeps its owners. As an ordinary user
 * all of it runs in a user namespace (no root, no loop mounts), and the image file, opened here,
 * reaches mke2fs as fd 3, so it stays ours.
 */
export async function buildRootfs(recipe: Recipe, image: string, options: BuildOptions = {}): Promise<void> {
  const mode = await resolveRootfsMode();
  if (mode === 'unshare') refuseMountsUnderDevShm();
  const run = privileged(mode);
  const mke2fs = run.tool('mke2fs', 'e2fsprogs');
  const parent = scratchParent();
  // mmdebstrap's special hooks split their arguments as a shell would
  if (/[\s'"\\]/.test(parent))
    throw new ForkdError('FORKD_ERR_BAD_INPUT', `the scratch dir ${parent} has a blank or a quote in its path`, {
      hint: 'set TMPDIR to a path without blanks or quotes',
    });
  const stage = await mkdtemp(join(parent, `forkd-recipe-${recipe.name}-`));
  // the namespace's root (not us) makes the tree in here: it may pass through, not list
  await chmod(stage, 0o711);
  const tree = join(stage, 'tree');
  const [rmBin, ...rmArgs] = run.argv(['rm', '-rf', tree]);
  // synchronous: it also runs from the exit handler
  const removeTree = () => void spawnSync(rmBin!, rmArgs, { stdio: 'ignore' });
  const unregister = onProcessExit(() => {
    removeTree();
    rmSync(stage, { recursive: true, force: true });
  });
  const task = `rootfs ${recipe.name}`;
  let step: Step = 'files';
  const fail = (err: unknown): never => {
    const message = err instanceof Error ? err.message : String(err);
    throw new ForkdError('FORKD_ERR_BUILD', `recipe ${recipe.name}: step ${step} failed: ${message}`, {
      hint: hints(recipe)[step],
      cause: err,
    });
  };
  let file: FileHandle | undefined;
  try {
    const hooks: string[] = [];
    if (Object.keys(recipe.files).length) {
      options.onProgress?.({ task, phase: 'files' });
      await writeFilesTar(recipe, join(stage, 'forkd-files.tar')).catch(fail);
      // unpacked by the tree's own tar in a chroot, so a symlink in the tree (/var/run -> /run)
      // leads into the tree, never to the host
      hooks.push(`upload ${join(stage, 'forkd-files.tar')} /forkd-files.tar`);
      hooks.push('chroot "$1" tar -xpf /forkd-files.tar -C / && rm -f "$1/forkd-files.tar"');
    }
    if (recipe.build) {
      await writeFile(join(stage, 'forkd-build.sh'), recipe.build, { mode: 0o600 });
      hooks.push(`upload ${join(stage, 'forkd-build.sh')} /forkd-build.sh`);
      hooks.push('chroot "$1" /bin/sh /forkd-build.sh && rm -f "$1/forkd-build.sh"');
    }
    // the host's resolver and name mean nothing in a guest (slirp's DNS is 10.0.2.3), and would
    // make the image differ from host to host
    hooks.push('echo "nameserver 10.0.2.3" > "$1/etc/resolv.conf" && echo forkd > "$1/etc/hostname"');
    const bootstrap = [
      // as root, the tree's mounts (proc, sys, dev) stay in a mount namespace of their own: seen
      // from outside, a mount under /dev/shm stops unprivileged builds binding /dev/shm, and a
      // killed build cannot leave them behind
      ...(mode === 'unshare' ? [] : [run.tool('unshare', 'util-linux'), '--mount', '--propagation', 'private', '--']),
      ...(mode === 'sudo' ? [run.tool('env', 'coreutils'), `TMPDIR=${parent}`] : []),
      run.mmdebstrap,
      `--mode=${mode === 'sudo' ? 'root' : mode}`,
      '--variant=minbase',
      '--format=directory',
      ...(recipe.packages.length ? [`--include=${recipe.packages.join(',')}`] : []),
      ...hooks.map((hook) => `--customize-hook=${hook}`),
      SUITE,
      tree,
      debianMirror(),
    ];
    // the namespace's root may not enter the caller's directory (a user's 0700 project): run from /
    const spawnOptions = { cwd: '/', env: { ...process.env, TMPDIR: parent } };
    // mmdebstrap removes its tree when told to stop: make sure it is told if we die first
    const setpriv = which('setpriv');
    const dieWithUs = (argv: string[]) => (setpriv ? [setpriv, '--pdeathsig', 'TERM', '--', ...argv] : argv);
    step = 'bootstrap';
    let lines = 0;
    options.onProgress?.({
      task,
      phase: step,
      detail: `${SUITE} + ${recipe.packages.join(' ') || 'nothing'} (${mode})`,
    });
    const [bin, ...args] = dieWithUs(mode === 'sudo' ? run.argv(bootstrap) : bootstrap);
    await runToolStreaming(bin!, args, {
      ...spawnOptions,
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

    step = 'mke2fs';
    options.onProgress?.({ task, phase: step, detail: `${recipe.imageMiB} MiB` });
    file = await open(image, 'w', 0o644);
    // inside the namespace our own uid is not mapped: the image is reached through the fd
    if (mode === 'unshare') await file.chmod(0o666);
    const target = mode === 'unshare' ? '/proc/self/fd/3' : image;
    const [mkfs, ...mkfsArgs] = run.argv([
      mke2fs,
      '-q',
      '-F',
      '-t',
      'ext4',
      '-L',
      'forkd',
      '-d',
      tree,
      target,
      `${recipe.imageMiB}M`,
    ]);
    await runToolStreaming(mkfs!, mkfsArgs, { ...spawnOptions, fd3: file.fd }).catch(fail);
    await file.chmod(0o644);
  } finally {
    await file?.close();
    removeTree();
    await rm(stage, { recursive: true, force: true });
    unregister();
  }
}
