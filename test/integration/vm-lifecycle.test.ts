import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, test, vi } from 'vitest';
import { writeCpio } from '../../src/engine/images/cpio.js';
import { busyboxPath } from '../../src/engine/images/initramfs.js';
import { StartedVm } from '../../src/engine/vmm/vm.js';
import { IsolatedHome, NOTHING_LEFT } from '../helpers/isolated-home.js';

const home = new IsolatedHome();

afterEach(() => {
  expect(home.qemuProcesses()).toEqual([]);
  expect(home.entries('run')).toEqual([]);
});

afterAll(() => {
  expect(home.leftovers()).toEqual(NOTHING_LEFT);
  home.remove();
});

async function baseOptions() {
  const base = await home.engine.buildBase();
  const { accel } = await home.engine.accel(base);
  return { kernel: base.kernel, initrd: base.initrd, accel, paths: home.paths };
}

describe('VM lifecycle', () => {
  test('a graceful stop powers the guest off and removes its files', async () => {
    const vm = await home.engine.boot();
    expect(vm.readyMs).toBeGreaterThan(0);
    const stopped = await vm.stop();
    expect(stopped).toMatchObject({ exitCode: 0, signal: null, consoleLog: undefined });
    expect(existsSync(vm.consoleLog)).toBe(false);
    expect(await vm.stop()).toBe(stopped); // idempotent
  });

  test('kill is immediate and idempotent; `await using` kills on scope exit', async () => {
    let pid = 0;
    {
      await using vm = await home.engine.boot();
      pid = vm.pid;
      expect(() => process.kill(pid, 0)).not.toThrow();
    }
    expect(() => process.kill(pid, 0)).toThrow();
  });

  test('requests in flight fail clearly when the VM dies, and the console log is kept', async () => {
    const vm = await home.engine.boot();
    const pending = vm.exec(['sleep', '30']);
    process.kill(vm.pid, 'SIGKILL');
    await expect(pending).rejects.toMatchObject({ code: 'FORKD_ERR_VM_STOPPED' });
    await expect(vm.exec(['true'])).rejects.toMatchObject({ code: 'FORKD_ERR_VM_STOPPED' });
    const stopped = await vm.stop();
    expect(stopped.signal).toBe('SIGKILL');
    expect(stopped.consoleLog).toBe(vm.consoleLog);
    expect(readFileSync(vm.consoleLog, 'utf8')).toMatch(/forkd-agent: ready/);
    // The test owns the kept log now.
    rmSync(vm.consoleLog);
  });
});

describe('bad input', () => {
  test('an unknown kernel path is a clear error and starts nothing', async () => {
    const opts = await baseOptions();
    await expect(StartedVm.start({ ...opts, kernel: '/no/such/bzImage' })).rejects.toMatchObject({
      code: 'FORKD_ERR_NOT_FOUND',
      message: expect.stringContaining('/no/such/bzImage'),
      hint: expect.stringContaining('forkd build base'),
    });
    await expect(StartedVm.start({ ...opts, initrd: '/no/such/initrd' })).rejects.toMatchObject({
      code: 'FORKD_ERR_NOT_FOUND',
    });
  });

  test('a kernel path that is not a regular file is a clear error', async () => {
    const opts = await baseOptions();
    await expect(StartedVm.start({ ...opts, kernel: home.root })).rejects.toMatchObject({
      code: 'FORKD_ERR_BAD_INPUT',
      message: expect.stringContaining('is not a regular file'),
    });
  });

  test('a file that is not a kernel makes QEMU exit: the error carries its message and the log path', async () => {
    const opts = await baseOptions();
    const bogus = join(home.root, 'not-a-kernel');
    writeFileSync(bogus, Buffer.alloc(4096, 1));
    const err = await StartedVm.start({ ...opts, kernel: bogus }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'FORKD_ERR_QEMU_EXITED' });
    expect((err as Error).message).toMatch(/console log: .*\.log/);
    rmSync(bogus);
    for (const log of home.entries('logs')) rmSync(join(home.root, 'logs', log));
  });

  test('a guest that never answers times out with the console log path, and is reaped', async () => {
    const opts = await baseOptions();
    // An initramfs whose init never starts an agent.
    const initrd = join(home.root, 'silent.cpio');
    writeFileSync(
      initrd,
      writeCpio([
        { type: 'dir', path: 'bin' },
        { type: 'dir', path: 'dev' },
        { type: 'chardev', path: 'dev/console', major: 5, minor: 1 },
        { type: 'file', path: 'bin/busybox', data: readFileSync(busyboxPath()), mode: 0o755 },
        {
          type: 'file',
          path: 'init',
          data: Buffer.from('#!/bin/busybox sh\necho silent-guest-up\nexec /bin/busybox sleep 1000\n'),
          mode: 0o755,
        },
      ]),
    );
    const started = Date.now();
    // long enough for the kernel to reach init on a loaded 2-core machine (the console must show it)
    const err = await StartedVm.start({ ...opts, initrd, bootTimeoutMs: 12_000 }).catch((e: unknown) => e);
    expect(Date.now() - started).toBeLessThan(25_000);
    expect(err).toMatchObject({ code: 'FORKD_ERR_BOOT_TIMEOUT' });
    const logPath = /console log: (\S+)/.exec((err as Error).message)?.[1];
    expect(logPath && existsSync(logPath)).toBe(true);
    expect(readFileSync(logPath!, 'utf8')).toMatch(/silent-guest-up/);
    rmSync(logPath!);
    rmSync(initrd);
  });

  test('a missing QEMU is a clear error with an install hint', async () => {
    const opts = await baseOptions();
    vi.stubEnv('FORKD_QEMU', '/no/such/qemu-system-x86_64');
    await expect(StartedVm.start(opts)).rejects.toMatchObject({
      code: 'FORKD_ERR_QEMU_MISSING',
      message: expect.stringContaining('/no/such/qemu-system-x86_64'),
      hint: expect.stringContaining('qemu-system-x86'),
    });
  });
});
