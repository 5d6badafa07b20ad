import { resolveAccel, type AccelVerdict } from './accel.js';
import { ensureBaseImage, type BaseImage } from './images/base.js';
import type { BuildOptions } from './images/cache.js';
import type { OnProgress } from './progress.js';
import { StatePaths } from './state-dir.js';
import { findQemu } from './vmm/qemu-binary.js';
import { StartedVm, type StartVmOptions } from './vmm/vm.js';

export type BootOptions = Omit<StartVmOptions, 'kernel' | 'initrd' | 'accel' | 'paths' | 'qemu'>;

/** The embedded engine: images, accelerator choice and VMs under one state dir. */
export class Engine {
  private verdict: Promise<AccelVerdict> | undefined;

  constructor(readonly paths: StatePaths = new StatePaths()) {}

  /** Kernel + base initramfs, built on first use and reused from the cache after. */
  buildBase(options?: BuildOptions): Promise<BaseImage> {
    return ensureBaseImage(this.paths, options);
  }

  /** The accelerator verdict for this host (memoised per engine, cached on disk). */
  async accel(base?: BaseImage): Promise<AccelVerdict> {
    this.verdict ??= (async () => resolveAccel(base ?? (await this.buildBase()), this.paths, await findQemu()))();
    return this.verdict;
  }

  /** Boots a fresh microVM from the base image (building it if needed). */
  async boot(options: BootOptions = {}, onProgress?: OnProgress): Promise<StartedVm> {
    const base = await this.buildBase(onProgress ? { onProgress } : {});
    const [verdict, qemu] = await Promise.all([this.accel(base), findQemu()]);
    return StartedVm.start({
      ...options,
      kernel: base.kernel,
      initrd: base.initrd,
      accel: verdict.accel,
      paths: this.paths,
      qemu,
    });
  }
}
