import { describe, expect, test } from 'vitest';
import { buildQemuArgs, kernelCommandLine, type VmSpec } from '../../src/engine/vmm/qemu-args.js';
import { parseQemuVersion } from '../../src/engine/vmm/qemu-binary.js';

const sockets = {
  qmp: '/r/qmp.sock',
  agent: '/r/agent.sock',
  pidFile: '/r/qemu.pid',
  stderrFile: '/r/qemu.stderr',
  consoleLog: '/l/vm.log',
};
const spec: VmSpec = { kernel: '/k', initrd: '/i', memoryMiB: 256, vcpus: 1, accel: 'tcg' };

function flag(args: string[], name: string): string[] {
  return args.flatMap((a, i) => (a === name ? [args[i + 1] ?? ''] : []));
}

describe('buildQemuArgs', () => {
  // prettier-ignore
  test.each([
    ['tcg', 'tcg,tb-size=64', 'max'],
    ['kvm', 'kvm', 'host'],
  ] as const)('accel %s -> -accel %s -cpu %s', (accel, accelFlag, cpu) => {
    const args = buildQemuArgs({ ...spec, accel }, sockets);
    expect(flag(args, '-accel')).toEqual([accelFlag]);
    expect(flag(args, '-cpu')).toEqual([cpu]);
  });

  test('microvm without ACPI, no reboot, sockets and the named agent port', () => {
    const args = buildQemuArgs(spec, sockets);
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
    const args = buildQemuArgs({ ...spec, rootfs: '/img.ext4' }, sockets);
    expect(flag(args, '-drive')).toEqual(['id=root,file=/img.ext4,format=raw,if=none,readonly=on']);
    expect(flag(args, '-device')).toContain('virtio-blk-device,drive=root');
    expect(flag(args, '-append')[0]).toMatch(/ forkd\.root=vda/);
  });

  test('a parent maps its RAM file shared; a fork child maps it privately and waits for state', () => {
    const parent = buildQemuArgs({ ...spec, memoryFile: { path: '/s/memory.bin', shared: true } }, sockets);
    expect(flag(parent, '-object')).toContain('memory-backend-file,id=mem,size=256M,mem-path=/s/memory.bin,share=on');
    expect(flag(parent, '-machine')).toEqual(['memory-backend=mem']);
    expect(parent).not.toContain('-incoming');
    const child = buildQemuArgs(
      { ...spec, memoryFile: { path: '/s/memory.bin', shared: false }, incoming: true },
      sockets,
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
});

describe('parseQemuVersion', () => {
  test.each([
    ['QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright', '7.2.22'],
    ['QEMU emulator version 9.0.0\n', '9.0.0'],
    ['something else', undefined],
  ])('%j -> %s', (text, version) => {
    expect(parseQemuVersion(text)).toBe(version);
  });
});
