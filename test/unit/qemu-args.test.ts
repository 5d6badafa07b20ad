import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { buildQemuArgs, kernelCommandLine, type VmSpec } from '../../src/engine/vmm/qemu-args.js';
import { parseHelpProperties, parseQmpProbe, qemuFeatures, type QemuProbe } from '../../src/engine/vmm/qemu-binary.js';

const sockets = {
  qmp: '/r/qmp.sock',
  agent: '/r/agent.sock',
  pidFile: '/r/qemu.pid',
  stderrFile: '/r/qemu.stderr',
  consoleLog: '/l/vm.log',
};
const spec: VmSpec = { kernel: '/k', initrd: '/i', memoryMiB: 256, vcpus: 1, accel: 'tcg' };
const features = { microvmOptionRoms: true, tcgTbSize: true };

function flag(args: string[], name: string): string[] {
  return args.flatMap((a, i) => (a === name ? [args[i + 1] ?? ''] : []));
}

describe('buildQemuArgs', () => {
  // prettier-ignore
  test.each([
    ['tcg', 'tcg,tb-size=64', 'max'],
    ['kvm', 'kvm', 'host'],
  ] as const)('accel %s -> -accel %s -cpu %s', (accel, accelFlag, cpu) => {
    const args = buildQemuArgs({ ...spec, accel }, sockets, features);
    expect(flag(args, '-accel')).toEqual([accelFlag]);
    expect(flag(args, '-cpu')).toEqual([cpu]);
  });

  test('microvm without ACPI, no reboot, sockets and the named agent port', () => {
    const args = buildQemuArgs(spec, sockets, features);
    expect(flag(args, '-M')).toEqual(['microvm,acpi=off,x-option-roms=off']);
    expect(args).toContain('-no-reboot');
    expect(args).toContain('-nodefaults');
    expect(flag(args, '-qmp')).toEqual(['unix:/r/qmp.sock,server=on,wait=off']);
    expect(flag(args, '-chardev')).toEqual(['socket,id=agent,path=/r/agent.sock,server=on,wait=off']);
    expect(flag(args, '-device')).toContain('virtserialport,chardev=agent,name=forkd.agent');
    expect(flag(args, '-serial')).toEqual(['file:/l/vm.log']);
    expect(flag(args, '-pidfile')).toEqual(['/r/qemu.pid']);
    expect(flag(args, '-drive')).toEqual([]);
  });

  test('a rootfs is a read-only virtio-blk drive and the guest is told to use it', () => {
    const args = buildQemuArgs({ ...spec, rootfs: '/img.ext4' }, sockets, features);
    expect(flag(args, '-drive')).toEqual(['id=root,file=/img.ext4,format=raw,if=none,readonly=on']);
    expect(flag(args, '-device')).toContain('virtio-blk-device,drive=root');
    expect(flag(args, '-append')[0]).toMatch(/ forkd\.root=vda/);
  });

  test('a parent maps its RAM file shared; a fork child maps it privately and waits for state', () => {
    const parent = buildQemuArgs({ ...spec, memoryFile: { path: '/s/memory.bin', shared: true } }, sockets, features);
    expect(flag(parent, '-object')).toContain('memory-backend-file,id=mem,size=256M,mem-path=/s/memory.bin,share=on');
    expect(flag(parent, '-machine')).toEqual(['memory-backend=mem']);
    expect(parent).not.toContain('-incoming');
    const child = buildQemuArgs(
      { ...spec, memoryFile: { path: '/s/memory.bin', shared: false }, incoming: true },
      sockets,
      features,
    );
    expect(flag(child, '-object')).toContain('memory-backend-file,id=mem,size=256M,mem-path=/s/memory.bin,share=off');
    expect(child).toContain('-S');
    expect(flag(child, '-incoming')).toEqual(['defer']);
    // Everything but the sharing and the incoming flags is identical: device state only loads into the same hardware.
    const strip = (args: string[]) =>
      args.filter((a) => !['-S', '-incoming', 'defer'].includes(a)).map((a) => a.replace('share=off', 'share=on'));
    expect(strip(child)).toEqual(parent);
  });

  test('kernel command line: quiet serial console, reboot ends QEMU, extra words last', () => {
    expect(kernelCommandLine(spec)).toBe('console=ttyS0 quiet reboot=t panic=-1 no_timer_check');
    expect(kernelCommandLine({ ...spec, rootfs: '/r', append: ['foo=1'] })).toBe(
      'console=ttyS0 quiet reboot=t panic=-1 no_timer_check forkd.root=vda foo=1',
    );
  });

  test('a QEMU without the optional switches gets a command line without them', () => {
    const args = buildQemuArgs(spec, sockets, { microvmOptionRoms: false, tcgTbSize: false });
    expect(flag(args, '-M')).toEqual(['microvm,acpi=off']);
    expect(flag(args, '-accel')).toEqual(['tcg']);
  });
});

/** What QEMU 7.2 (Debian 12) and 10.0 (Debian 13) answered the probe (test/fixtures/qemu). */
function recordedProbe(version: '7.2' | '10.0'): QemuProbe {
  const fixture = (name: string) => readFileSync(join(import.meta.dirname, '../fixtures/qemu', name), 'utf8');
  return {
    ...parseQmpProbe(fixture(`qmp-probe-${version}.jsonl`)),
    microvm: parseHelpProperties(fixture(`microvm-help-${version}.txt`)),
  };
}

describe('QEMU probe', () => {
  test.each([
    ['7.2', '7.2.22'],
    ['10.0', '10.0.13'],
  ] as const)('QEMU %s: version %s, everything forkd uses', (recorded, version) => {
    const probe = recordedProbe(recorded);
    expect(probe.version).toBe(version);
    expect(probe.microvm).toContain('acpi');
    expect(probe.migration).toContain('x-ignore-shared');
    expect(qemuFeatures('/q', probe)).toEqual({ microvmOptionRoms: true, tcgTbSize: true });
  });

  test('a QEMU without x-ignore-shared or microvm ACPI is refused, naming what it lacks', () => {
    const probe = recordedProbe('10.0');
    probe.migration.delete('x-ignore-shared');
    probe.microvm.delete('acpi');
    expect(() => qemuFeatures('/usr/bin/qemu', probe)).toThrow(
      expect.objectContaining({
        code: 'FORKD_ERR_QEMU_MISSING',
        message: expect.stringContaining('microvm machine property acpi, migration capability x-ignore-shared'),
      }),
    );
  });

  test('optional switches follow the probe', () => {
    const probe = recordedProbe('7.2');
    probe.microvm.delete('x-option-roms');
    probe.tcg.delete('tb-size');
    expect(qemuFeatures('/q', probe)).toEqual({ microvmOptionRoms: false, tcgTbSize: false });
  });
});
