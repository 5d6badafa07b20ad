import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { ensureArtifact, hashInputs } from '../../src/engine/images/cache.js';
import { isStaticElf } from '../../src/engine/images/initramfs.js';
import { fragmentSettings, kernelFragmentPath, missingSettings } from '../../src/engine/images/kernel.js';
import { StatePaths } from '../../src/common/state-dir.js';

const roots: string[] = [];
function tempPaths(): StatePaths {
  const root = mkdtempSync(join(tmpdir(), 'forkd-unit-'));
  roots.push(root);
  return new StatePaths(root);
}
afterEach(() => {
  for (const root of roots.splice(0)) rmSync(root, { recursive: true, force: true });
});

describe('kernel config fragment', () => {
  const fragment = readFileSync(kernelFragmentPath, 'utf8');

  test('asks for everything the guest needs, built in', () => {
    const settings = fragmentSettings(fragment);
    for (const option of [
      'VIRTIO_MMIO',
      'VIRTIO_MMIO_CMDLINE_DEVICES',
      'VIRTIO_BLK',
      'VIRTIO_CONSOLE',
      'VIRTIO_NET',
      'HW_RANDOM_VIRTIO',
      'EXT4_FS',
      'OVERLAY_FS',
      'TMPFS',
      'SYSVIPC',
      'DEVTMPFS',
      'KERNEL_LZ4',
    ]) {
      expect(settings).toContain(`CONFIG_${option}=y`);
    }
    expect(settings).toContain('# CONFIG_MODULES is not set');
  });

  test('finds settings that olddefconfig dropped', () => {
    const frag = 'CONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\n# a comment\n';
    expect(missingSettings(frag, 'CONFIG_A=y\nCONFIG_B=y\n')).toEqual([]);
    expect(missingSettings(frag, 'CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\n')).toEqual([
      'CONFIG_B=y',
      '# CONFIG_C is not set',
    ]);
  });
});

describe('artifact cache', () => {
  test('hashes distinguish boundaries between inputs', () => {
    expect(hashInputs(['ab', 'c'])).not.toBe(hashInputs(['a', 'bc']));
    expect(hashInputs(['x', Buffer.from('y')])).toBe(hashInputs(['x', 'y']));
  });

  test('builds once into a staging dir, then reuses', async () => {
    const paths = tempPaths();
    let builds = 0;
    const build = async (staging: string) => {
      builds++;
      const { writeFile } = await import('node:fs/promises');
      await writeFile(join(staging, 'out'), 'built');
    };
    const first = await ensureArtifact(paths, 'thing', 'k1', build);
    const second = await ensureArtifact(paths, 'thing', 'k1', build);
    expect([first.reused, second.reused, builds]).toEqual([false, true, 1]);
    expect(readFileSync(join(first.dir, 'out'), 'utf8')).toBe('built');
    expect(readdirSync(paths.images('thing'))).toEqual(['k1']);
  });

  test('concurrent requests for one artifact build it once', async () => {
    const paths = tempPaths();
    let builds = 0;
    const build = async (staging: string) => {
      builds++;
      await new Promise((resolve) => setTimeout(resolve, 300));
      const { writeFile } = await import('node:fs/promises');
      await writeFile(join(staging, 'out'), 'built');
    };
    const results = await Promise.all([1, 2, 3].map(() => ensureArtifact(paths, 'thing', 'k4', build)));
    expect(builds).toBe(1);
    expect(results.filter((r) => !r.reused)).toHaveLength(1);
    expect(readdirSync(paths.images('thing'))).toEqual(['k4']);
  });

  test('a lock left by a dead process is taken over', async () => {
    const paths = tempPaths();
    const { writeFileSync } = await import('node:fs');
    writeFileSync(join(paths.images('thing'), '.lock-k5'), '999999999');
    const result = await ensureArtifact(paths, 'thing', 'k5', async () => {});
    expect(result.reused).toBe(false);
    expect(readdirSync(paths.images('thing'))).toEqual(['k5']);
  });

  test('a failed build leaves nothing that looks usable', async () => {
    const paths = tempPaths();
    await expect(
      ensureArtifact(paths, 'thing', 'k2', async () => {
        throw new Error('compiler exploded');
      }),
    ).rejects.toThrow('compiler exploded');
    expect(readdirSync(paths.images('thing'))).toEqual([]);
  });

  test('lookupOnly reports a missing artifact with a hint instead of building', async () => {
    const paths = tempPaths();
    await expect(ensureArtifact(paths, 'kernel', 'k3', async () => {}, { lookupOnly: true })).rejects.toMatchObject({
      code: 'FORKD_ERR_NOT_FOUND',
      hint: 'run `forkd build base`',
    });
  });
});

describe('isStaticElf', () => {
  test('tells a static binary from a dynamic one', () => {
    expect(isStaticElf(readFileSync('/bin/busybox'))).toBe(true);
    expect(isStaticElf(readFileSync(process.execPath))).toBe(false);
    expect(isStaticElf(Buffer.from('#!/bin/sh\n'))).toBe(false);
  });
});
