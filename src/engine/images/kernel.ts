import { existsSync, rmSync } from 'node:fs';
import { copyFile, mkdtemp, readdir, readFile, statfs, stat } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { ForkdError } from '../../errors.js';
import { requireTool, runTool, runToolStreaming, which } from '../host-tools.js';
import { packageRoot } from '../../common/package-root.js';
import type { OnProgress } from '../progress.js';
import { onProcessExit } from '../reaper.js';
import type { StatePaths } from '../../common/state-dir.js';
import { ensureArtifact, hashInputs, type Artifact, type BuildOptions } from './cache.js';

const BUILD_VERSION = 'kernel-v1';
/** Where the distribution's linux-source-<version> packages put their tarball. */
const SOURCE_DIR = '/usr/src';
const SOURCE_TARBALL = /^linux-source-(\d+(?:\.\d+)*)\.tar\.(xz|bz2)$/;
/** Objects compiled for our config (measured); only drives the progress bar. */
const EXPECTED_OBJECTS = 1040;
const SCRATCH_BYTES_NEEDED = 3 * 1024 ** 3;

export const kernelFragmentPath = join(packageRoot, 'native', 'kernel', 'forkd-x86_64.config');

export interface KernelSource {
  tarball: string;
  version: string;
}

function compareVersions(a: number[], b: number[]): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const diff = (a[i] ?? 0) - (b[i] ?? 0);
    if (diff) return diff;
  }
  return 0;
}

/** The newest `linux-source-<version>.tar.{xz,bz2}` among file names, by version (6.12 after 6.1). */
export function newestSourceTarball(names: string[]): string | undefined {
  return names
    .flatMap((name) => {
      const m = SOURCE_TARBALL.exec(name);
      return m ? [{ name, version: m[1]!.split('.').map(Number) }] : [];
    })
    .sort((a, b) => compareVersions(a.version, b.version))
    .at(-1)?.name;
}

/** The version of the package that installed `file` (dpkg), or '' when no package owns it. */
async function packageVersion(file: string): Promise<string> {
  const dpkg = which('dpkg-query');
  if (!dpkg) return '';
  const owner = await runTool(dpkg, ['-S', file]).catch(() => '');
  const pkg = /^([^:\s]+)(?::\S+)?: /.exec(owner)?.[1];
  return pkg ? (await runTool(dpkg, ['-W', '-f', '${Version}', pkg]).catch(() => '')).trim() : '';
}

/**
 * The Linux source to build the guest kernel from: FORKD_LINUX_SOURCE, else the newest tarball
 * a linux-source-<version> package installed. Its version (for the cache key) is the package's.
 */
export async function findKernelSource(
  env: NodeJS.ProcessEnv = process.env,
  sourceDir = SOURCE_DIR,
): Promise<KernelSource> {
  const newest = newestSourceTarball(existsSync(sourceDir) ? await readdir(sourceDir) : []);
  const tarball = env.FORKD_LINUX_SOURCE ?? (newest && join(sourceDir, newest));
  if (!tarball || !existsSync(tarball)) {
    throw new ForkdError(
      'FORKD_ERR_BUILD',
      tarball
        ? `Linux source not found at ${tarball}`
        : `no Linux source: ${sourceDir} has no linux-source-<version>.tar.xz or .tar.bz2`,
      {
        hint: "run forkd install-deps, or sudo apt-get install linux-source-<version> with the newest version that apt-cache search --names-only '^linux-source-[0-9]' lists (e.g. linux-source-6.12); or set FORKD_LINUX_SOURCE to a Linux source tarball, or FORKD_KERNEL to your own bzImage",
      },
    );
  }
  const version = (await packageVersion(tarball)) || `size:${(await stat(tarball)).size}`;
  return { tarball, version };
}

/** Lines of the fragment that set an option (`CONFIG_X=...` or `# CONFIG_X is not set`). */
export function fragmentSettings(fragment: string): string[] {
  return fragment
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => /^CONFIG_\w+=/.test(line) || /^# CONFIG_\w+ is not set$/.test(line));
}

/** Settings of the fragment that the final .config does not have. */
export function missingSettings(fragment: string, finalConfig: string): string[] {
  const lines = new Set(finalConfig.split('\n'));
  return fragmentSettings(fragment).filter((setting) => {
    if (lines.has(setting)) return false;
    const off = /^# (CONFIG_\w+) is not set$/.exec(setting);
    // "not set" is also satisfied when the option does not exist on this arch at all.
    return off ? [...lines].some((line) => line.startsWith(`${off[1]}=`)) : true;
  });
}

async function scratchDir(paths: StatePaths): Promise<string> {
  for (const base of ['/dev/shm', paths.tmp()]) {
    try {
      const fs = await statfs(base);
      if (fs.bavail * fs.bsize >= SCRATCH_BYTES_NEEDED || base !== '/dev/shm')
        return mkdtemp(join(base, 'forkd-kernel-'));
    } catch {
      // try the next one
    }
  }
  return mkdtemp(join(paths.tmp(), 'forkd-kernel-'));
}

/** The one top-level directory a source tarball unpacked into (linux-source-6.12, linux-source-6.8.0, ...). */
async function unpackedTree(work: string, tarball: string): Promise<string> {
  const entries = await readdir(work, { withFileTypes: true });
  const [top] = entries;
  if (entries.length !== 1 || !top?.isDirectory()) {
    throw new ForkdError('FORKD_ERR_BUILD', `${tarball} is not a Linux source tarball with one top-level directory`, {
      hint: 'point FORKD_LINUX_SOURCE at a linux-source-<version> tarball',
    });
  }
  return join(work, top.name);
}

/** Compiles the guest kernel from the distribution's Linux source; cached by config + source version. */
export async function ensureKernel(
  paths: StatePaths,
  options: BuildOptions = {},
): Promise<Artifact & { kernel: string }> {
  const onProgress: OnProgress = options.onProgress ?? (() => {});
  const fragment = await readFile(kernelFragmentPath, 'utf8');
  const source = await findKernelSource();
  const key = hashInputs([BUILD_VERSION, fragment, source.version]);
  const artifact = await ensureArtifact(
    paths,
    'kernel',
    key,
    async (staging) => {
      for (const [tool, pkg] of [
        ['make', 'make'],
        ['gcc', 'gcc'],
        ['flex', 'flex'],
        ['bison', 'bison'],
        ['bc', 'bc'],
        ['tar', 'tar'],
        source.tarball.endsWith('.bz2') ? ['bzip2', 'bzip2'] : ['xz', 'xz-utils'],
        ['lz4', 'lz4'],
      ] as const) {
        requireTool(tool, pkg);
      }
      const work = await scratchDir(paths);
      const unregister = onProcessExit(() => rmSync(work, { recursive: true, force: true }));
      try {
        const task = 'kernel';
        onProgress({ task, phase: 'unpack', detail: source.tarball });
        await runTool('tar', ['-xf', source.tarball, '-C', work]); // tar picks the decompressor
        const tree = await unpackedTree(work, source.tarball);
        const make = (args: string[], onLine?: (line: string) => void) =>
          runToolStreaming('make', ['ARCH=x86_64', ...args], { cwd: tree, ...(onLine ? { onLine } : {}) });
        onProgress({ task, phase: 'configure' });
        await make(['tinyconfig']);
        await runTool(join(tree, 'scripts/kconfig/merge_config.sh'), ['-m', '.config', kernelFragmentPath], {
          cwd: tree,
        });
        await make(['olddefconfig']);
        const config = await readFile(join(tree, '.config'), 'utf8');
        const missing = missingSettings(fragment, config);
        if (missing.length) {
          throw new ForkdError(
            'FORKD_ERR_BUILD',
            `kernel config lost settings after olddefconfig: ${missing.join(', ')}`,
            {
              hint: `add their dependencies to ${kernelFragmentPath}`,
            },
          );
        }
        let objects = 0;
        await make([`-j${availableParallelism()}`, 'bzImage'], (line) => {
          const m = /^\s+(CC|AS|LD)\s+(\S+)/.exec(line);
          if (!m) return;
          objects++;
          onProgress({
            task,
            phase: 'compile',
            done: Math.min(objects, EXPECTED_OBJECTS),
            total: EXPECTED_OBJECTS,
            detail: m[2],
          });
        });
        await copyFile(join(tree, 'arch/x86/boot/bzImage'), join(staging, 'bzImage'));
        await copyFile(join(tree, '.config'), join(staging, 'config'));
        onProgress({ task, phase: 'done' });
      } finally {
        rmSync(work, { recursive: true, force: true });
        unregister();
      }
    },
    options,
  );
  return { ...artifact, kernel: join(artifact.dir, 'bzImage') };
}
