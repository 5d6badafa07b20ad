import { readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';

/** A VM that is still starting may not have written its pid file yet (or only created it empty). */
const STARTING_GRACE_MS = 60_000;

/** The QEMU pid recorded in a run dir, or undefined when there is none yet. */
function recordedPid(dir: string): number | undefined {
  try {
    const pid = Number(readFileSync(join(dir, 'qemu.pid'), 'utf8').trim());
    return pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** True while the pid is a process whose command line points at this dir (pids get reused). */
function runsFrom(pid: number, dir: string): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(dir);
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
      if (!name.startsWith('vm-')) continue;
      const pid = recordedPid(dir);
      const stale = pid === undefined ? Date.now() - statSync(dir).mtimeMs > STARTING_GRACE_MS : !runsFrom(pid, dir);
      if (!stale) continue;
      rmSync(dir, { recursive: true, force: true });
      removed.push(name);
    } catch {
      // raced with its owner removing it
    }
  }
  return removed;
}
