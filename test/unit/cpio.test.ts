import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readlinkSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { writeCpio } from '../../src/engine/images/cpio.js';

describe('writeCpio', () => {
  const archive = writeCpio([
    { type: 'dir', path: 'etc' },
    { type: 'file', path: '/etc/hello', data: Buffer.from('hi\n'), mode: 0o600 },
    { type: 'file', path: 'odd', data: Buffer.from('12345') },
    { type: 'symlink', path: 'etc/link', target: '/etc/hello' },
  ]);

  test('is byte-for-byte deterministic and 4-byte aligned', () => {
    expect(archive.length % 4).toBe(0);
    expect(archive.subarray(0, 6).toString()).toBe('070701');
    expect(archive.includes(Buffer.from('TRAILER!!!'))).toBe(true);
    expect(writeCpio([{ type: 'dir', path: 'etc' }]).equals(writeCpio([{ type: 'dir', path: 'etc' }]))).toBe(true);
  });

  test('unpacks with GNU cpio to the same files, modes and links', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cpio-test-'));
    try {
      execFileSync('cpio', ['-id', '--quiet'], { cwd: dir, input: archive });
      expect(readFileSync(join(dir, 'etc/hello'), 'utf8')).toBe('hi\n');
      expect(statSync(join(dir, 'etc/hello')).mode & 0o777).toBe(0o600);
      expect(readFileSync(join(dir, 'odd'), 'utf8')).toBe('12345');
      expect(readlinkSync(join(dir, 'etc/link'))).toBe('/etc/hello');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('refuses paths that climb out of the archive', () => {
    expect(() => writeCpio([{ type: 'dir', path: '../x' }])).toThrow(/bad cpio path/);
    expect(() => writeCpio([{ type: 'dir', path: '/' }])).toThrow(/bad cpio path/);
  });
});
