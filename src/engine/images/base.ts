import { accessSync, constants, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { ForkdError } from '../../errors.js';
import type { StatePaths } from '../state-dir.js';
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

/** Checks a user-supplied path is a readable file; throws a clear error otherwise. */
export function requireReadableFile(path: string, what: string, hint: string): string {
  const full = resolve(path);
  try {
    accessSync(full, constants.R_OK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ForkdError(
      code === 'ENOENT' ? 'FORKD_ERR_NOT_FOUND' : 'FORKD_ERR_BAD_INPUT',
      `${what} ${full} ${code === 'ENOENT' ? 'does not exist' : `is not readable (${code})`}`,
      { hint },
    );
  }
  if (!statSync(full).isFile())
    throw new ForkdError('FORKD_ERR_BAD_INPUT', `${what} ${full} is not a regular file`, { hint });
  return full;
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
