import { mkdirSync, mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { sweepStaleRunDirs } from '../../src/engine/vmm/run-dirs.js';

const roots: string[] = [];
function runRoot(): string {
  const root = mkdtempSync(join(tmpdir(), 'forkd-run-'));
  roots.push(root);
  return root;
}
afterEach(() => {
  for (const root of roots.splice(0)) rmSync(root, { recursive: true, force: true });
});

function vmDir(root: string, name: string, pid?: string, ageMs = 0, owner?: number): void {
  const dir = join(root, name);
  mkdirSync(dir);
  if (pid !== undefined) writeFileSync(join(dir, 'qemu.pid'), pid);
  if (owner !== undefined) writeFileSync(join(dir, 'owner.pid'), String(owner));
  const when = (Date.now() - ageMs) / 1000;
  utimesSync(dir, when, when);
}

describe('sweepStaleRunDirs', () => {
  test('removes dirs whose QEMU died, keeps starting and foreign ones', () => {
    const root = runRoot();
    vmDir(root, 'vm-dead', '999999999');
    vmDir(root, 'vm-starting-no-pid');
    vmDir(root, 'vm-starting-empty-pid', '');
    vmDir(root, 'vm-abandoned', undefined, 120_000);
    vmDir(root, 'vm-reused-pid', String(process.pid)); // alive, but not a QEMU of this dir
    vmDir(root, 'vm-starting-owner-alive', undefined, 0, process.pid);
    vmDir(root, 'vm-owner-killed-before-qemu-wrote-pid', '', 0, 999999999);
    vmDir(root, 'not-a-vm', '999999999');
    expect(sweepStaleRunDirs(root).sort()).toEqual([
      'vm-abandoned',
      'vm-dead',
      'vm-owner-killed-before-qemu-wrote-pid',
      'vm-reused-pid',
    ]);
    expect(readdirSync(root).sort()).toEqual([
      'not-a-vm',
      'vm-starting-empty-pid',
      'vm-starting-no-pid',
      'vm-starting-owner-alive',
    ]);
  });
});
