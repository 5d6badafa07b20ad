import { readFile } from 'node:fs/promises';
import { requireReadableFile } from '../host-tools.js';
import type { StatePaths } from '../../common/state-dir.js';
import { ensureAgentBinary } from './agent-binary.js';
import { hashInputs, type BuildOptions } from './cache.js';
import { ensureInitramfs } from './initramfs.js';
import { ensureKernel } from './kernel.js';

export interface BaseImage {
  kernel: string;
  initrd: string;
  /** Content hashes that a snapshot records so it restores only on the same guest. */
  kernelHash: string;
  initrdHash: string;
  /** True when nothing had to be built. */
  reused: boolean;
}

/** Kernel + initramfs with our agent: built (or reused from the cache) on first use. */
export async function ensureBaseImage(paths: StatePaths, options: BuildOptions = {}): Promise<BaseImage> {
  const userKernel = process.env.FORKD_KERNEL;
  const kernel = userKernel
    ? {
        kernel: requireReadableFile(
          userKernel,
          'FORKD_KERNEL',
          'point FORKD_KERNEL at a bzImage, or unset it to build ours',
        ),
        reused: true,
      }
    : await ensureKernel(paths, options);
  const agent = await ensureAgentBinary(paths, options);
  const initramfs = await ensureInitramfs(paths, agent.binary, options);
  return {
    kernel: kernel.kernel,
    initrd: initramfs.initrd,
    kernelHash: userKernel ? hashInputs([await readFile(kernel.kernel)]) : (kernel as { key: string }).key,
    initrdHash: initramfs.key,
    reused: kernel.reused && agent.reused && initramfs.reused,
  };
}
