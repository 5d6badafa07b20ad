import { describe, expect, test } from 'vitest';
import { checkCompatible, parseMeta, type SnapshotMeta } from '../../src/engine/snapshot/meta.js';
import { validateTag } from '../../src/engine/snapshot/tag.js';
import { shellQuote } from '../../src/engine/vmm/device-state.js';

const meta: SnapshotMeta = {
  format: 1,
  tag: 'pg',
  created: '2026-11-22T00:00:00.000Z',
  parent: null,
  image: { name: 'base', kernelHash: 'k', initrdHash: 'i' },
  memoryMiB: 256,
  vcpus: 1,
  accel: 'tcg',
  qemuVersion: '7.2.22',
  machine: 'microvm',
  vm: { kernel: '/k', initrd: '/i' },
  warmup: null,
  vmstateBytes: 40_000,
  ports: [],
};

describe('validateTag', () => {
  test.each(['a', 'A_1', '_x', 'v1.2-rc', 'x'.repeat(64)])('accepts %j', (tag) => {
    expect(validateTag(tag)).toBe(tag);
  });
  test.each(['', '.x', '-x', 'x'.repeat(65), 'a/b', '../a', 'a b', 'ä', 'a\n', 7, null])('refuses %j', (tag) => {
    expect(() => validateTag(tag)).toThrow(
      expect.objectContaining({ code: 'FORKD_ERR_BAD_INPUT', hint: expect.any(String) }),
    );
  });
});

describe('parseMeta', () => {
  test('round-trips a valid meta.json', () => {
    expect(parseMeta(JSON.stringify(meta), 'x')).toEqual(meta);
  });
  test.each([
    ['not JSON', '{"tag": '],
    ['another format', JSON.stringify({ ...meta, format: 2 })],
    ['a missing field', JSON.stringify({ ...meta, memoryMiB: undefined })],
    ['an unsafe tag', JSON.stringify({ ...meta, tag: '../etc' })],
  ])('refuses %s', (_what, text) => {
    expect(() => parseMeta(text, 'meta.json')).toThrow(
      expect.objectContaining({ code: expect.stringMatching(/FORKD_ERR_(CORRUPT|BAD_INPUT)/) }),
    );
  });
});

describe('checkCompatible', () => {
  test('passes on the same accelerator, QEMU and machine', () => {
    expect(() => checkCompatible(meta, { accel: 'tcg', qemuVersion: '7.2.22' })).not.toThrow();
  });
  test('names every difference', () => {
    expect(() => checkCompatible(meta, { accel: 'kvm', qemuVersion: '8.2.0' })).toThrow(
      expect.objectContaining({
        code: 'FORKD_ERR_INCOMPATIBLE',
        message: 'snapshot pg was taken with accelerator tcg (this host runs kvm), QEMU 7.2.22 (this host has 8.2.0)',
      }),
    );
  });
});

describe('shellQuote', () => {
  test.each([
    ['/plain/path', "'/plain/path'"],
    ["/it's/here", "'/it'\\''s/here'"],
    ['/a b/$HOME', "'/a b/$HOME'"],
  ])('%j -> %s', (input, quoted) => {
    expect(shellQuote(input)).toBe(quoted);
  });
});
