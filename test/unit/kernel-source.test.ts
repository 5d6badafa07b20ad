import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { findKernelSource, newestSourceTarball } from '../../src/engine/images/kernel.js';

const dirs: string[] = [];
function sourceDir(files: string[]): string {
  const dir = mkdtempSync(join(tmpdir(), 'forkd-src-'));
  dirs.push(dir);
  for (const file of files) writeFileSync(join(dir, file), 'x'.repeat(7));
  return dir;
}
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

describe('the Linux source to build the guest kernel from', () => {
  test.each([
    [['linux-source-6.1.tar.xz'], 'linux-source-6.1.tar.xz'], // Debian 12
    [['linux-source-6.1.tar.xz', 'linux-source-6.12.tar.xz'], 'linux-source-6.12.tar.xz'], // by version, not by name
    [['linux-source-6.8.0.tar.bz2', 'linux-source-5.15.0.tar.bz2'], 'linux-source-6.8.0.tar.bz2'], // Ubuntu
    [['linux-source-6.9.tar.xz', 'linux-source-6.10.0.tar.bz2'], 'linux-source-6.10.0.tar.bz2'],
    [['linux-source-6.1', 'linux-source-6.1.tar.gz', 'linux-source.tar.xz', 'python3.11'], undefined],
  ])('%j -> %s', (names, newest) => {
    expect(newestSourceTarball(names)).toBe(newest);
  });

  test('the newest tarball in the source dir; a file no package owns is versioned by its size', async () => {
    const dir = sourceDir(['linux-source-6.1.tar.xz', 'linux-source-6.12.tar.xz']);
    expect(await findKernelSource({}, dir)).toEqual({
      tarball: join(dir, 'linux-source-6.12.tar.xz'),
      version: 'size:7',
    });
  });

  test('FORKD_LINUX_SOURCE wins over the source dir', async () => {
    const dir = sourceDir(['linux-source-6.12.tar.xz', 'my-linux.tar.bz2']);
    const tarball = join(dir, 'my-linux.tar.bz2');
    expect((await findKernelSource({ FORKD_LINUX_SOURCE: tarball }, dir)).tarball).toBe(tarball);
  });

  test('none: a build error whose hint names the install command', async () => {
    await expect(findKernelSource({}, sourceDir(['linux-source-6.1']))).rejects.toMatchObject({
      code: 'FORKD_ERR_BUILD',
      message: expect.stringContaining('has no linux-source-<version>.tar.xz or .tar.bz2'),
      hint: expect.stringMatching(/forkd install-deps.*apt-get install linux-source-<version>/),
    });
    await expect(findKernelSource({ FORKD_LINUX_SOURCE: '/nonexistent.tar.xz' }, '/nonexistent')).rejects.toMatchObject(
      {
        code: 'FORKD_ERR_BUILD',
        message: 'Linux source not found at /nonexistent.tar.xz',
      },
    );
  });
});
