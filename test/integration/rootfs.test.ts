import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { busyboxPath } from '../../src/engine/images/initramfs.js';
import { IsolatedHome, NOTHING_LEFT } from '../helpers/isolated-home.js';

const home = new IsolatedHome();

afterAll(() => {
  expect(home.leftovers()).toEqual(NOTHING_LEFT);
  home.remove();
});

/** A tiny ext4 root filesystem (busybox + a marker file), made without root or loop mounts. */
function makeRootfs(): string {
  const tree = join(home.root, 'tree');
  for (const dir of ['bin', 'etc', 'dev', 'proc', 'sys', 'tmp', 'run']) mkdirSync(join(tree, dir), { recursive: true });
  writeFileSync(join(tree, 'bin/busybox'), readFileSync(busyboxPath()), { mode: 0o755 });
  for (const applet of ['sh', 'cat', 'echo', 'mount', 'ls', 'touch', 'grep'])
    symlinkSync('busybox', join(tree, 'bin', applet));
  writeFileSync(join(tree, 'etc/marker'), 'from the rootfs image\n');
  const image = join(home.root, 'rootfs.ext4');
  execFileSync('mke2fs', ['-q', '-F', '-t', 'ext4', '-d', tree, image, '16M']);
  execFileSync('rm', ['-rf', tree]);
  return image;
}

const sha256 = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

describe('a root filesystem drive', () => {
  test('becomes / read-only under a tmpfs overlay: writes work, the image never changes', async () => {
    const rootfs = makeRootfs();
    const before = sha256(rootfs);
    const vm = await home.engine.boot({ rootfs });
    try {
      expect((await vm.readFile('/etc/marker')).toString()).toBe('from the rootfs image\n');
      const mounts = (await vm.exec(['cat', '/proc/mounts'])).stdout.toString();
      // The image (mounted read-only before the switch, out of the guest's view now) is the lower layer.
      expect(mounts).toMatch(/^overlay \/ overlay rw,.*lowerdir=\/\.lower,upperdir=\/\.rw\/upper/m);
      // The initramfs is gone from view: only the image's busybox applets exist.
      expect((await vm.exec(['ls', '/bin'])).stdout.toString().split('\n').filter(Boolean).sort()).toEqual([
        'busybox',
        'cat',
        'echo',
        'grep',
        'ls',
        'mount',
        'sh',
        'touch',
      ]);
      await vm.writeFile('/etc/marker', 'changed in the guest\n');
      expect((await vm.exec('cat /etc/marker; touch /new-file && echo ok')).stdout.toString()).toBe(
        'changed in the guest\nok\n',
      );
    } finally {
      await vm.kill();
    }
    expect(sha256(rootfs)).toBe(before);
    execFileSync('rm', ['-f', rootfs]);
  });
});
