import { constants, existsSync } from 'node:fs';
import { access, statfs } from 'node:fs/promises';
import { errorMessage } from '../errors.js';
import { resolveAccel } from '../engine/accel.js';
import { thisHost, unsupportedHost, type HostPlatform } from '../engine/host-platform.js';
import { which } from '../engine/host-tools.js';
import type { GuestImages } from '../engine/images/official.js';
import { packageVersion } from '../common/package-root.js';
import { openEngine } from '../hub/hub.js';
import { readPins } from '../hub/official.js';
import { busyboxPath } from '../engine/images/initramfs.js';
import { findKernelSource } from '../engine/images/kernel.js';
import type { StatePaths } from '../common/state-dir.js';
import { findQemu, type QemuBinary } from '../engine/vmm/qemu-binary.js';

export type CheckStatus = 'pass' | 'warn' | 'fail' | 'skip';

export interface Check {
  name: string;
  status: CheckStatus;
  detail: string;
  hint?: string;
}

export interface DoctorReport {
  ok: boolean;
  accel: 'kvm' | 'tcg' | null;
  accelReason: string | null;
  checks: Check[];
  summary: Record<CheckStatus, number>;
}

const GiB = 1024 ** 3;
const SETUP_HINT = 'run the setup command: npm run setup';

const check = (name: string, status: CheckStatus, detail: string, hint?: string): Check => ({
  name,
  status,
  detail,
  ...(hint && status !== 'pass' ? { hint } : {}),
});

const summarize = (checks: Check[]): Record<CheckStatus, number> => {
  const summary: Record<CheckStatus, number> = { pass: 0, warn: 0, fail: 0, skip: 0 };
  for (const c of checks) summary[c.status]++;
  return summary;
};

export async function runDoctor(paths: StatePaths, host: HostPlatform = thisHost()): Promise<DoctorReport> {
  const unsupported = unsupportedHost(host);
  const checks: Check[] = [
    check(
      'platform',
      unsupported ? 'fail' : 'pass',
      unsupported ?? `${host.platform}/${host.arch}`,
      'use an x86_64 Linux host',
    ),
  ];
  // nothing else applies on such a host: no QEMU probe, no build
  if (unsupported) return { ok: false, accel: null, accelReason: null, checks, summary: summarize(checks) };

  let qemu: QemuBinary | undefined;
  try {
    qemu = await findQemu();
    checks.push(check('qemu', 'pass', `${qemu.path} (QEMU ${qemu.version})`));
  } catch (err) {
    checks.push(
      check('qemu', 'fail', errorMessage(err), 'sudo apt-get install --no-install-recommends qemu-system-x86'),
    );
  }

  if (!existsSync('/dev/kvm')) {
    checks.push(
      check(
        '/dev/kvm',
        'warn',
        'not present: guests run under TCG (software emulation, slower)',
        'use a host with VT-x/AMD-V, or accept TCG',
      ),
    );
  } else {
    const rw = await access('/dev/kvm', constants.R_OK | constants.W_OK).then(
      () => true,
      () => false,
    );
    const pvm = existsSync('/sys/module/kvm_pvm') ? ' (kvm_pvm loaded: PVM host)' : '';
    checks.push(
      check(
        '/dev/kvm',
        rw ? 'pass' : 'warn',
        rw ? `read/write${pvm}` : 'present but not accessible',
        'sudo usermod -aG kvm $USER, or the udev rule in the README',
      ),
    );
  }

  const pins = readPins();
  const pinned = pins?.version === packageVersion ? Object.keys(pins.packs) : [];
  checks.push(
    check(
      'official packs',
      pinned.length ? 'pass' : 'skip',
      pinned.length
        ? `pinned for forkd-action ${packageVersion}: ${pinned.join(', ')}${process.env.FORKD_BUILD === 'local' ? ' (FORKD_BUILD=local: not used)' : ''}`
        : `none pinned for forkd-action ${packageVersion}: images are built here`,
    ),
  );

  let base: GuestImages | undefined;
  try {
    // an official pack pulled earlier counts; nothing is fetched here
    base = await openEngine(paths).engine.buildBase({ lookupOnly: true });
    const from = base.official ? ` (from the official pack ${base.official})` : '';
    checks.push(check('base image', 'pass', `kernel ${base.kernel}, initramfs ${base.initrd}${from}`));
  } catch (err) {
    checks.push(
      check(
        'base image',
        'warn',
        errorMessage(err),
        'forkd build base (about 5 min under TCG-only hosts: it compiles the guest kernel)',
      ),
    );
  }

  if (!process.env.FORKD_KERNEL) {
    try {
      const source = await findKernelSource();
      const missing = ['make', 'gcc', 'flex', 'bison', 'bc'].filter((tool) => !which(tool));
      checks.push(
        check(
          'kernel build tools',
          missing.length ? 'warn' : 'pass',
          missing.length ? `missing: ${missing.join(', ')}` : `linux-source ${source.version}`,
          SETUP_HINT,
        ),
      );
    } catch (err) {
      checks.push(check('kernel build tools', base ? 'skip' : 'warn', errorMessage(err), SETUP_HINT));
    }
  }
  checks.push(
    check('busybox', existsSync(busyboxPath()) ? 'pass' : 'warn', busyboxPath(), 'sudo apt-get install busybox-static'),
  );
  checks.push(
    check(
      'process reaping',
      which('setpriv') ? 'pass' : 'warn',
      which('setpriv') ? 'setpriv --pdeathsig available' : 'setpriv missing: QEMU may outlive a killed forkd',
      'sudo apt-get install util-linux',
    ),
  );

  let accel: DoctorReport['accel'] = null;
  let accelReason: string | null = null;
  if (base && qemu) {
    const verdict = await resolveAccel(base, paths, qemu);
    accel = verdict.accel;
    accelReason = verdict.reason;
    checks.push(
      check(
        'accelerator',
        verdict.accel === 'kvm' ? 'pass' : 'warn',
        `${verdict.accel}: ${verdict.reason}`,
        'TCG works everywhere but is 10-50x slower than KVM',
      ),
    );
  } else {
    checks.push(check('accelerator', 'skip', 'needs QEMU and the base image', 'forkd build base'));
  }

  try {
    const fs = await statfs(paths.ensureRoot());
    const free = fs.bavail * fs.bsize;
    const status: CheckStatus = free >= 5 * GiB ? 'pass' : free >= GiB ? 'warn' : 'fail';
    checks.push(
      check(
        'state dir',
        status,
        `${paths.root}: ${(free / GiB).toFixed(1)} GiB free`,
        'free disk space or set FORKD_HOME elsewhere',
      ),
    );
  } catch (err) {
    checks.push(check('state dir', 'fail', errorMessage(err), 'set FORKD_HOME to a writable directory'));
  }

  const summary = summarize(checks);
  return { ok: summary.fail === 0, accel, accelReason, checks, summary };
}
