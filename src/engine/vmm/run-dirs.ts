import { readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';

/** A VM that is still starting may not have written its pid file yet. */
const STARTING_GRACE_MS = 60_000;

function qemuAlive(dir: string): boolean {
  try {
    const pid = Number(readFileSync(join(dir, 'qemu.pid'), 'utf8').trim());
    // The pid must still be a process whose command line points at this dir (pids get reused).
    return pid > 0 && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(dir);
  } catch {
    return false;
  }
}

/**
 * Removes per-VM run dirs whose QEMU is gone: left behind when a forkd process was SIGKILLed
 * (its QEMU died with it through the parent-death signal, but nobody removed the sockets).
 */
export function sweepStaleRunDirs(runRoot: string): string[] {
  const removed: string[] = [];
  for (const name of readdirSync(runRoot)) {
    const dir = join(runRoot, name);
    try {
      if (!name.startsWith('vm-') || qemuAlive(dir)) continue;
      if (Date.now() - statSync(dir).mtimeMs < STARTING_GRACE_MS && !readdirSync(dir).includes('qemu.pid')) continue;
      rmSync(dir, { recursive: true, force: true });
      removed.push(name);
    } catch {
      // raced with its owner removing it
    }
  }
  return removed;
}
