import { readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { pidAlive, runsFrom } from '../process-alive.js';

/** A VM that is still starting may not have written its pid file yet (or only created it empty). */
const STARTING_GRACE_MS = 60_000;

/** The pid recorded in a run dir file (`qemu.pid` by QEMU, `owner.pid` by forkd), or undefined. */
function recordedPid(dir: string, file: 'qemu.pid' | 'owner.pid'): number | undefined {
  try {
    const pid = Number(readFileSync(join(dir, file), 'utf8').trim());
    return pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** True when nobody will come back for this run dir. */
function isStale(dir: string): boolean {
  const qemu = recordedPid(dir, 'qemu.pid');
  if (qemu !== undefined) return !runsFrom(qemu, dir);
  // QEMU has not written its pid yet: the VM is starting if the forkd process that owns it lives.
  const owner = recordedPid(dir, 'owner.pid');
  const young = Date.now() - statSync(dir).mtimeMs < STARTING_GRACE_MS;
  return owner === undefined ? !young : !pidAlive(owner) || !young;
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
      if (!isStale(dir)) continue;
      rmSync(dir, { recursive: true, force: true });
      removed.push(name);
    } catch {
      // raced with its owner removing it
    }
  }
  return removed;
}
