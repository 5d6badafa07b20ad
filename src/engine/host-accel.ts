import type { StatePaths } from '../common/state-dir.js';
import { resolveAccel, type AccelGuest, type AccelVerdict } from './accel.js';
import { hostCpu } from './host-cpu.js';
import type { HostFacts } from './snapshot/meta.js';
import { findQemu, type QemuBinary } from './vmm/qemu-binary.js';
import type { VmLedgerHook } from './vmm/vm-process.js';

/** The accelerator this host runs each guest kernel with: memoised per engine, cached on disk. */
export class HostAccel {
  /** Accelerator verdicts by guest kernel path. */
  private readonly verdicts = new Map<string, Promise<AccelVerdict>>();

  constructor(
    private readonly paths: StatePaths,
    /** Told of probe VMs (the daemon's ledger). */
    private readonly ledger?: VmLedgerHook,
  ) {}

  verdict(guest: AccelGuest): Promise<AccelVerdict> {
    let verdict = this.verdicts.get(guest.kernel);
    if (!verdict) {
      verdict = findQemu().then((qemu) => resolveAccel(guest, this.paths, qemu, this.ledger));
      this.verdicts.set(guest.kernel, verdict);
      verdict.catch(() => this.verdicts.delete(guest.kernel)); // a failure is retried by the next caller
    }
    return verdict;
  }

  /** What a snapshot must have been taken with to run `guest` here (its kernel decides KVM or not). */
  async facts(guest: AccelGuest): Promise<{ host: HostFacts; qemu: QemuBinary }> {
    const [verdict, qemu] = await Promise.all([this.verdict(guest), findQemu()]);
    return { host: { accel: verdict.accel, qemuVersion: qemu.version, cpu: hostCpu() }, qemu };
  }
}
