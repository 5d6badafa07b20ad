import { describe, expect, test } from 'vitest';
import { packageVersion } from '../../src/common/package-root.js';
import { incompatibilities } from '../../src/engine/snapshot/meta.js';
import { officialFile, officialSource, RELEASES_URL, type OfficialPins } from '../../src/hub/official.js';

const sha = 'a'.repeat(64);
const pins = (packs: OfficialPins['packs'] = {}, version = packageVersion): OfficialPins => ({ version, packs });
const base = { file: officialFile('base', packageVersion), sha256: sha, size: 1234 };

describe('official pack pins', () => {
  test('a pin of this exact version gives the release URL, its sha256 and size, vouched for by the pin', () => {
    expect(officialSource('base', {}, pins({ base }))).toEqual({
      pin: base,
      source: {
        ref: `forkd/base@${packageVersion}`,
        url: `${RELEASES_URL}/v${packageVersion}/${base.file}`,
        sha256: sha,
        size: 1234,
        vouchedBy: `the pin of forkd-action ${packageVersion} (official-packs.json)`,
      },
    });
  });

  test('FORKD_HUB_URL (a dir or its registry.json) and FORKD_RELEASES_URL say where the packs are', () => {
    const url = (env: NodeJS.ProcessEnv) => {
      const found = officialSource('base', env, pins({ base }));
      return 'source' in found ? found.source.url : found.reason;
    };
    expect(url({ FORKD_HUB_URL: 'http://127.0.0.1:9/hub' })).toBe(`http://127.0.0.1:9/hub/${base.file}`);
    expect(url({ FORKD_HUB_URL: 'http://127.0.0.1:9/hub/registry.json' })).toBe(`http://127.0.0.1:9/hub/${base.file}`);
    expect(url({ FORKD_RELEASES_URL: 'https://mirror.example/rel' })).toBe(
      `https://mirror.example/rel/v${packageVersion}/${base.file}`,
    );
  });

  test('no pins, pins of another version, no pin for the name, FORKD_BUILD=local: a reason, no source', () => {
    expect(officialSource('base', {}, undefined)).toEqual({
      reason: `no official packs are pinned for forkd-action ${packageVersion}`,
    });
    expect(officialSource('base', {}, pins({ base }, '0.0.1'))).toEqual({
      reason: `no official packs are pinned for forkd-action ${packageVersion}`,
    });
    expect(officialSource('postgres', {}, pins({ base }))).toEqual({
      reason: `no official pack of postgres is pinned for forkd-action ${packageVersion}`,
    });
    expect(officialSource('base', { FORKD_BUILD: 'local' }, pins({ base }))).toEqual({ reason: 'FORKD_BUILD=local' });
  });

  test('a bad FORKD_BUILD and a malformed pin are refused', () => {
    expect(() => officialSource('base', { FORKD_BUILD: 'always' }, pins({ base }))).toThrow(
      expect.objectContaining({ code: 'FORKD_ERR_BAD_INPUT', message: 'FORKD_BUILD=always is not one of auto, local' }),
    );
    for (const bad of [
      { ...base, sha256: 'xyz' },
      { ...base, size: -1.5 },
      { ...base, file: '../forkd-base.forkd.tar.zst' },
      { ...base, file: officialFile('postgres', packageVersion) },
    ]) {
      expect(() => officialSource('base', {}, pins({ base: bad }))).toThrow(
        expect.objectContaining({ code: 'FORKD_ERR_CORRUPT' }),
      );
    }
  });
});

describe('what keeps a snapshot from fitting a host', () => {
  const taken = { accel: 'kvm' as const, qemuVersion: '8.2.2', machine: 'microvm', cpu: 'GenuineIntel Xeon' };
  test('under KVM the CPU counts; under TCG it does not', () => {
    expect(incompatibilities(taken, { accel: 'kvm', qemuVersion: '8.2.2', cpu: 'GenuineIntel Xeon' })).toEqual([]);
    expect(incompatibilities(taken, { accel: 'kvm', qemuVersion: '8.2.2', cpu: 'AuthenticAMD EPYC' })).toEqual([
      'CPU GenuineIntel Xeon under KVM (this host has AuthenticAMD EPYC)',
    ]);
    const tcg = { ...taken, accel: 'tcg' as const };
    expect(incompatibilities(tcg, { accel: 'tcg', qemuVersion: '8.2.2', cpu: 'AuthenticAMD EPYC' })).toEqual([]);
    expect(incompatibilities(tcg, { accel: 'tcg', qemuVersion: '10.0.6' })).toEqual([
      'QEMU 8.2.2 (this host has 10.0.6)',
    ]);
  });
});
