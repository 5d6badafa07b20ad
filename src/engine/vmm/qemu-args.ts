import type { QemuFeatures } from './qemu-binary.js';

export type Accel = 'kvm' | 'tcg';

export interface VmSpec {
  kernel: string;
  initrd: string;
  /** Raw ext4 image attached read-only as /dev/vda; the guest overlays it with tmpfs. */
  rootfs?: string;
  memoryMiB: number;
  vcpus: number;
  accel: Accel;
  /** TCG translation cache size; QEMU's 1 GiB default is far too much for many small VMs. */
  tcgTbSizeMiB?: number;
  /** Extra kernel command-line words. */
  append?: string[];
  /**
   * Guest RAM in a file. A parent being snapshotted maps it shared (its RAM becomes the file);
   * a forked child maps the snapshot's file privately, so the kernel copies a page on first write.
   */
  memoryFile?: { path: string; shared: boolean };
  /** Start paused, waiting for device state over QMP (`migrate-incoming`): a fork's restore shell. */
  incoming?: boolean;
  /**
   * A NIC on QEMU user networking with `restrict=on`: the guest reaches nothing outside, and the
   * host reaches the guest only through the ports forwarded to each VM (exposePorts).
   */
  net?: boolean;
}

export interface VmSockets {
  qmp: string;
  agent: string;
  pidFile: string;
  stderrFile: string;
  consoleLog: string;
}

export const AGENT_PORT_NAME = 'forkd.agent';
export const NETDEV_ID = 'n0';

export function kernelCommandLine(spec: VmSpec): string {
  return [
    'console=ttyS0',
    'quiet',
    'reboot=t', // a triple fault resets, and -no-reboot turns that into QEMU exiting
    'panic=-1',
    // QEMU's IO-APIC timer routing is known good; skip the kernel's check of it. (Keep the local
    // APIC timer: `noapictimer` saves ~0.4 s of boot under TCG, but leaves the PIT ticking and
    // idle children then burn ~7 % of a core each instead of ~0.2 %.)
    'no_timer_check',
    ...(spec.rootfs ? ['forkd.root=vda'] : []),
    ...(spec.append ?? []),
  ].join(' ');
}

/** The QEMU command line for one microVM on a QEMU with `features` (pure; no I/O). */
export function buildQemuArgs(spec: VmSpec, sockets: VmSockets, features: QemuFeatures): string[] {
  const accel = spec.accel === 'kvm' ? 'kvm' : features.tcgTbSize ? `tcg,tb-size=${spec.tcgTbSizeMiB ?? 64}` : 'tcg';
  const args = [
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    // ACPI off: with ACPI, microvm under TCG never gets timer ticks (no IRQ0 override, no kvmclock).
    '-M',
    `microvm,acpi=off${features.microvmOptionRoms ? ',x-option-roms=off' : ''}`,
    '-accel',
    accel,
    '-cpu',
    spec.accel === 'kvm' ? 'host' : 'max',
    '-m',
    String(spec.memoryMiB),
    '-smp',
    String(spec.vcpus),
    '-kernel',
    spec.kernel,
    '-initrd',
    spec.initrd,
    '-append',
    kernelCommandLine(spec),
    '-no-reboot',
    '-pidfile',
    sockets.pidFile,
    '-serial',
    `file:${sockets.consoleLog}`,
    '-qmp',
    `unix:${sockets.qmp},server=on,wait=off`,
    '-chardev',
    `socket,id=agent,path=${sockets.agent},server=on,wait=off`,
    '-device',
    'virtio-serial-device',
    '-device',
    `virtserialport,chardev=agent,name=${AGENT_PORT_NAME}`,
    '-object',
    'rng-random,id=rng0,filename=/dev/urandom',
    '-device',
    'virtio-rng-device,rng=rng0',
  ];
  if (spec.memoryFile) {
    const { path, shared } = spec.memoryFile;
    args.push(
      '-object',
      `memory-backend-file,id=mem,size=${spec.memoryMiB}M,mem-path=${path},share=${shared ? 'on' : 'off'}`,
      '-machine',
      'memory-backend=mem',
    );
  }
  if (spec.net)
    args.push('-netdev', `user,id=${NETDEV_ID},restrict=on`, '-device', `virtio-net-device,netdev=${NETDEV_ID}`);
  if (spec.incoming) args.push('-S', '-incoming', 'defer');
  if (spec.rootfs) {
    args.push(
      '-drive',
      `id=root,file=${spec.rootfs},format=raw,if=none,readonly=on`,
      '-device',
      'virtio-blk-device,drive=root',
    );
  }
  return args;
}
