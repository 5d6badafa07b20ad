import { existsSync, rmSync } from 'node:fs';
import { copyFile, mkdtemp, readFile, statfs, stat } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { ForkdError } from '../../errors.js';
import { requireTool, runTool, runToolStreaming, which } from '../host-tools.js';
import { packageRoot } from '../package-root.js';
import type { OnProgress } from '../progress.js';
import { onProcessExit } from '../reaper.js';
import type { StatePaths } from '../state-dir.js';
import { ensureArtifact, hashInputs, type Artifact, type BuildOptions } from './cache.js';

const BUILD_VERSION = 'kernel-v1';
const DEFAULT_SOURCE = '/usr/src/linux-source-6.1.tar.xz';
/** Objects compiled for our config (measured); only drives the progress bar. */
const EXPECTED_OBJECTS = 1040;
const SCRATCH_BYTES_NEEDED = 3 * 1024 ** 3;

export const kernelFragmentPath = join(packageRoot, 'native', 'kernel', 'forkd-x86_64.config');

export interface KernelSource {
  tarball: string;
  version: string;
}

export async function findKernelSource(env: NodeJS.ProcessEnv = process.env): Promise<KernelSource> {
  const tarball = env.FORKD_LINUX_SOURCE ?? DEFAULT_SOURCE;
  if (!existsSync(tarball)) {
    throw new ForkdError('FORKD_ERR_BUILD', `Linux source not found at ${tarball}`, {
      hint: 'run the setup command (npm run setup) or: sudo apt-get install linux-source-6.1 (or set FORKD_KERNEL to your own bzImage)',
    });
  }
  const dpkg = which('dpkg-query');
  const version =
    (tarball === DEFAULT_SOURCE && dpkg
      ? (await runTool(dpkg, ['-W', '-f', '${Version}', 'linux-source-6.1']).catch(() => '')).trim()
      : '') || `size:${(await stat(tarball)).size}`;
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
        ['xz', 'xz-utils'],
        ['lz4', 'lz4'],
      ] as const) {
        requireTool(tool, pkg);
      }
      const work = await scratchDir(paths);
      const unregister = onProcessExit(() => rmSync(work, { recursive: true, force: true }));
      try {
        const task = 'kernel';
        onProgress({ task, phase: 'unpack', detail: source.tarball });
        await runTool('tar', ['-xJf', source.tarball, '-C', work]);
        const tree = join(work, 'linux-source-6.1');
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
