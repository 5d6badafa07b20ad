import { writeJsonAtomic } from '../common/atomic-file.js';
import { sha256File } from '../common/hash.js';
import { constants, existsSync, rmSync } from 'node:fs';
import { access, readFile } from 'node:fs/promises';
import { release } from 'node:os';
import { ForkdError, errorMessage } from '../errors.js';
import { hashInputs } from './images/cache.js';
import type { StatePaths } from '../common/state-dir.js';
import type { Accel } from './vmm/qemu-args.js';
import type { QemuBinary } from './vmm/qemu-binary.js';
import type { VmLedgerHook } from './vmm/vm-process.js';
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

/** A guest to probe KVM with: any kernel + initramfs that runs our agent. */
export interface AccelGuest {
  kernel: string;
  initrd: string;
}

/** Boots `guest` under KVM; KVM is used only if the guest agent really answers. */
async function probeKvm(
  guest: AccelGuest,
  paths: StatePaths,
  qemu: QemuBinary,
  ledger: VmLedgerHook | undefined,
): Promise<AccelVerdict> {
  const pvm = existsSync('/sys/module/kvm_pvm');
  try {
    const vm = await StartedVm.start({
      kernel: guest.kernel,
      initrd: guest.initrd,
      accel: 'kvm',
      paths,
      qemu,
      bootTimeoutMs: KVM_PROBE_TIMEOUT_MS,
      launch: { ...(ledger ? { ledger } : {}), role: 'probe' },
    });
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

type VerdictCache = Record<string, { accel: Accel; reason: string; probedAt: string }>;

/** Probe verdicts by host kernel, QEMU and guest kernel (its sha256): accel.json's `verdicts`. */
async function readVerdicts(paths: StatePaths): Promise<VerdictCache> {
  try {
    const cached = JSON.parse(await readFile(paths.file('accel.json'), 'utf8')) as { verdicts?: VerdictCache };
    return typeof cached.verdicts === 'object' && cached.verdicts !== null ? cached.verdicts : {};
  } catch {
    return {}; // no cache yet, or unreadable: probe
  }
}

const verdictKey = (qemu: QemuBinary, kernelSha256: string) => hashInputs([release(), qemu.version, kernelSha256]);

/** FORKD_ACCEL, or TCG on a host without a usable /dev/kvm: the verdicts that need no guest at all. */
async function hostVerdict(): Promise<AccelVerdict | undefined> {
  const forced = parseAccelEnv(process.env.FORKD_ACCEL);
  if (forced) return { accel: forced, reason: `forced by FORKD_ACCEL=${forced}`, source: 'env' };
  const precheck = await kvmPrecheck();
  return precheck ? { accel: 'tcg', reason: precheck, source: 'probe' } : undefined;
}

async function cachedVerdict(paths: StatePaths, key: string): Promise<AccelVerdict | undefined> {
  const cached = (await readVerdicts(paths))[key];
  return cached ? { accel: cached.accel, reason: cached.reason, source: 'cache' } : undefined;
}

/**
 * The verdict when it needs no probe boot: FORKD_ACCEL, a host without a usable /dev/kvm (TCG),
 * or an earlier probe of the guest kernel with this sha256. Undefined when only a probe can tell.
 */
export async function knownAccel(
  kernelSha256: string,
  paths: StatePaths,
  qemu: QemuBinary,
): Promise<AccelVerdict | undefined> {
  return (await hostVerdict()) ?? cachedVerdict(paths, verdictKey(qemu, kernelSha256));
}

/**
 * The accelerator to run `guest` with: FORKD_ACCEL when set, TCG without a usable /dev/kvm, else
 * a probe boot of `guest` under KVM (falling back to TCG), cached by host kernel, QEMU and the
 * guest kernel's sha256. The probe VM is reported to `ledger` if given.
 */
export async function resolveAccel(
  guest: AccelGuest,
  paths: StatePaths,
  qemu: QemuBinary,
  ledger?: VmLedgerHook,
): Promise<AccelVerdict> {
  const verdict = await hostVerdict();
  if (verdict) return verdict;
  const kernelSha256 = await sha256File(guest.kernel).catch((err: unknown) => {
    throw new ForkdError('FORKD_ERR_NOT_FOUND', `the guest kernel ${guest.kernel} cannot be read`, {
      hint: 'build it again (forkd build base), or unpack the snapshot that uses it again',
      cause: err,
    });
  });
  const key = verdictKey(qemu, kernelSha256);
  const cached = await cachedVerdict(paths, key);
  if (cached) return cached;
  const probed = await probeKvm(guest, paths, qemu, ledger);
  const verdicts = await readVerdicts(paths);
  verdicts[key] = { accel: probed.accel, reason: probed.reason, probedAt: new Date().toISOString() };
  writeJsonAtomic(paths.file('accel.json'), { verdicts });
  return probed;
}
