import { describe, expect, test } from 'vitest';
import { isPrivateCopy } from '../../src/engine/snapshot/vm-copy.js';

describe('isPrivateCopy (the high word of a /proc/PID/pagemap entry)', () => {
  test('a present page that is no longer the file page is one the VM wrote', () => {
    expect(isPrivateCopy(0x8100_0000)).toBe(true); // present + exclusively mapped, as QEMU's written RAM shows
    expect(isPrivateCopy(0x8000_0000)).toBe(true);
  });

  test('the file page itself, or a page not present, is not', () => {
    expect(isPrivateCopy(0xa100_0000)).toBe(false); // present + file
    expect(isPrivateCopy(0x2000_0000)).toBe(false); // file, not present
    expect(isPrivateCopy(0x0100_0000)).toBe(false);
    expect(isPrivateCopy(0)).toBe(false);
  });
});
