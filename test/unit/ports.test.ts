import { describe, expect, test } from 'vitest';
import { hostPortRange, parseHostForwards, validatePorts } from '../../src/engine/vmm/ports.js';
import { buildQemuArgs } from '../../src/engine/vmm/qemu-args.js';

describe('ports', () => {
  test('reads the host ports QEMU bound from `info usernet`', () => {
    const usernet = [
      'Hub -1 (n0):',
      '  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ',
      '  TCP[HOST_FORWARD]  13       127.0.0.1 41234       10.0.2.15  5432     0     0',
      '  TCP[HOST_FORWARD]  14       127.0.0.1 35141       10.0.2.15  8080     0     0',
      '  TCP[ESTABLISHED]   20       127.0.0.1 35141       10.0.2.15  8080     0     0',
    ].join('\n');
    expect(parseHostForwards(usernet)).toEqual({ '5432': 41234, '8080': 35141 });
  });

  test.each([[[80, 443]], [[]], [[65535]]])('accepts %j', (ports) => {
    expect(validatePorts(ports)).toEqual(ports);
  });

  test.each([[[0]], [[70000]], [[80, 80]], [['80']], ['80'], [[1.5]]])('refuses %j', (ports) => {
    expect(() => validatePorts(ports)).toThrow(expect.objectContaining({ code: 'FORKD_ERR_BAD_INPUT' }));
  });

  test('a VM with ports gets a NIC on restricted user networking', () => {
    const sockets = { qmp: '/q', agent: '/a', pidFile: '/p', stderrFile: '/e', consoleLog: '/l' };
    const features = { microvmOptionRoms: true, tcgTbSize: true };
    const args = buildQemuArgs(
      { kernel: '/k', initrd: '/i', memoryMiB: 256, vcpus: 1, accel: 'tcg', net: true },
      sockets,
      features,
    );
    expect(args.join(' ')).toContain('-netdev user,id=n0,restrict=on -device virtio-net-device,netdev=n0');
    expect(
      buildQemuArgs({ kernel: '/k', initrd: '/i', memoryMiB: 256, vcpus: 1, accel: 'tcg' }, sockets, features),
    ).not.toContain('-netdev');
  });
});

describe('FORKD_PORT_RANGE', () => {
  test('unset means any free port', () => {
    expect(hostPortRange({})).toBeUndefined();
  });

  test('LOW-HIGH is read', () => {
    expect(hostPortRange({ FORKD_PORT_RANGE: '40000-40999' })).toEqual({ low: 40000, high: 40999 });
  });

  test.each(['40000', '40999-40000', '80-90', '40000-70000', 'a-b', '40000-'])('refuses %j with a hint', (spec) => {
    expect(() => hostPortRange({ FORKD_PORT_RANGE: spec })).toThrow(
      expect.objectContaining({ code: 'FORKD_ERR_BAD_INPUT', hint: expect.stringContaining('LOW-HIGH') }),
    );
  });
});
