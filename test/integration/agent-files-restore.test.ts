import { randomBytes } from 'node:crypto';
import { describe, expect, test } from 'vitest';
import type { StartedVm } from '../../src/engine/vmm/vm.js';
import { bootForFile } from '../helpers/isolated-home.js';

const { vms } = bootForFile(2);
const a = () => vms[0]!;
const b = () => vms[1]!;

describe('files', () => {
  test.each([
    ['empty', Buffer.alloc(0)],
    ['text', Buffer.from('hello\nworld\n')],
    ['random 64 KiB', randomBytes(64 * 1024)],
    ['random 9 MiB (several chunks)', randomBytes(9 * 1024 * 1024 + 17)],
  ])('round-trips %s byte-exact', async (_name, data) => {
    await a().writeFile('/tmp/roundtrip.bin', data);
    const back = await a().readFile('/tmp/roundtrip.bin');
    expect(back.length).toBe(data.length);
    expect(back.equals(data)).toBe(true);
    const size = await a().exec(['stat', '-c', '%s', '/tmp/roundtrip.bin']);
    expect(size.stdout.toString().trim()).toBe(String(data.length));
  });

  test('applies the file mode', async () => {
    await a().writeFile('/tmp/script.sh', '#!/bin/sh\necho ran\n', { mode: 0o755 });
    expect((await a().exec(['/tmp/script.sh'])).stdout.toString()).toBe('ran\n');
    expect((await a().exec(['stat', '-c', '%a', '/tmp/script.sh'])).stdout.toString().trim()).toBe('755');
  });

  test('reading a missing file or a directory is a clear error', async () => {
    await expect(a().readFile('/no/such/file')).rejects.toMatchObject({ agentCode: 'E_NOENT' });
    await expect(a().readFile('/etc')).rejects.toMatchObject({ agentCode: 'E_ISDIR' });
    await expect(a().writeFile('/no/such/dir/file', 'x')).rejects.toMatchObject({ agentCode: 'E_NOENT' });
  });
});

describe('restored', () => {
  test('sets the guest clock to the time it is given', async () => {
    const future = Date.UTC(2031, 0, 2, 3, 4, 5);
    await a().restored({ timeMs: future, hostname: 'child-7' });
    const seconds = Number((await a().exec(['date', '+%s'])).stdout.toString());
    expect(Math.abs(seconds * 1000 - future)).toBeLessThan(5000);
    expect((await a().exec(['hostname'])).stdout.toString()).toBe('child-7\n');

    await a().restored();
    const now = Number((await a().exec(['date', '+%s'])).stdout.toString());
    expect(Math.abs(now * 1000 - Date.now())).toBeLessThan(3000);
  });

  test('gives two VMs from the same image different randomness', async () => {
    await Promise.all([a().restored({ entropy: randomBytes(64) }), b().restored({ entropy: randomBytes(64) })]);
    const read = (vm: StartedVm) => vm.exec(['sh', '-c', 'head -c 32 /dev/urandom | od -An -tx1']);
    const [ra, rb] = await Promise.all([read(a()), read(b())]);
    expect(ra.stdout.toString().replace(/\s/g, '')).toMatch(/^[0-9a-f]{64}$/);
    expect(ra.stdout.toString()).not.toBe(rb.stdout.toString());
  });

  test('rejects a restored request without entropy', async () => {
    await expect(a().guest.client.request('restored', { time_ms: Date.now() })).rejects.toMatchObject({
      agentCode: 'E_BAD_REQUEST',
    });
  });
});
