import { writeJsonAtomic } from './atomic-file.js';
import { constants, existsSync, rmSync } from 'node:fs';
import { access, readFile } from 'node:fs/promises';
import { release } from 'node:os';
import { ForkdError, errorMessage } from '../errors.js';
import { hashInputs } from './images/cache.js';
import type { BaseImage } from './images/base.js';
import type { StatePaths } from './state-dir.js';
import type { Accel } from './vmm/qemu-args.js';
import type { QemuBinary } from './vmm/qemu-binary.js';
import { StartedVm } from './vmm/vm.js';

export interface AccelVerdict {
  accel: Accel;
  reason: string;
  /** How the verdict was reached: forced by FORKD_ACCEL, read from the cache, or probed now. */
  source: 'env' | 'cache' | 'probe';
}

const KVM_PROBE_TIMEOUT_MS = 10_000;

export function parseAccelEnv(value: string | undefined): Accel | undefined {
  if (value === undefined || value === '' || value === 'auto') return undefined;
  if (value === 'kvm' || value === 'tcg') return value;
  throw new ForkdError('FORKD_ERR_BAD_INPUT', `FORKD_ACCEL=${value} is not one of kvm, tcg, auto`, {
    hint: 'unset FORKD_ACCEL to let forkd probe, or set it to kvm or tcg',
  });
}

/** Why KVM cannot be used, before trying a boot; undefined when a probe boot is worth it. */
async function kvmPrecheck(): Promise<string | undefined> {
  if (!existsSync('/dev/kvm')) return '/dev/kvm does not exist (no hardware virtualisation exposed to this host)';
  try {
    await access('/dev/kvm', constants.R_OK | constants.W_OK);
  } catch {
    return 'no read/write permission on /dev/kvm (add your user to the kvm group or install the udev rule)';
  }
  return undefined;
}

/** Boots the base image under KVM; KVM is used only if the guest agent really answers. */
async function probeKvm(base: BaseImage, paths: StatePaths, qemu: QemuBinary): Promise<AccelVerdict> {
  const precheck = await kvmPrecheck();
  if (precheck) return { accel: 'tcg', reason: precheck, source: 'probe' };
  const pvm = existsSync('/sys/module/kvm_pvm');
  try {
    const vm = await StartedVm.start({ ...base, accel: 'kvm', paths, qemu, bootTimeoutMs: KVM_PROBE_TIMEOUT_MS });
    const bootMs = vm.readyMs;
    await vm.kill();
    return {
      accel: 'kvm',
      reason: `probe boot under KVM reached the agent in ${Math.round(bootMs)} ms`,
      source: 'probe',
    };
  } catch (err) {
    // The verdict keeps the reason; the failed probe's console log is of no further use.
    if (err instanceof ForkdError && err.consoleLog) rmSync(err.consoleLog, { force: true });
    const why = errorMessage(err).split('\n')[0];
    return {
      accel: 'tcg',
      reason: pvm
        ? `host KVM is PVM (kvm_pvm loaded), which runs only PVM-aware guest kernels; probe boot under KVM failed: ${why}`
        : `probe boot under KVM failed: ${why}`,
      source: 'probe',
    };
  }
}

/**
 * The accelerator to run guests with: FORKD_ACCEL when set, else a cached verdict, else a probe
 * boot under KVM (falling back to TCG). The cache is keyed by host kernel, QEMU and guest kernel.
 */
export async function resolveAccel(base: BaseImage, paths: StatePaths, qemu: QemuBinary): Promise<AccelVerdict> {
  const forced = parseAccelEnv(process.env.FORKD_ACCEL);
  if (forced) return { accel: forced, reason: `forced by FORKD_ACCEL=${forced}`, source: 'env' };
  const key = hashInputs([release(), qemu.version, base.kernelHash, String(existsSync('/dev/kvm'))]);
  const cacheFile = paths.file('accel.json');
  try {
    const cached = JSON.parse(await readFile(cacheFile, 'utf8')) as { key: string; accel: Accel; reason: string };
    if (cached.key === key) return { accel: cached.accel, reason: cached.reason, source: 'cache' };
  } catch {
    // no cache yet, or unreadable: probe
  }
  const verdict = await probeKvm(base, paths, qemu);
  writeJsonAtomic(cacheFile, { key, accel: verdict.accel, reason: verdict.reason, probedAt: new Date().toISOString() });
  return verdict;
}
