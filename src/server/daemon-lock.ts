import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { StatePaths } from '../common/state-dir.js';
import { ForkdError } from '../errors.js';
import { processStartTime } from './owners.js';

/** Who holds a state dir: one process for good (a pid and its start time). */
interface LockHolder {
  pid: number;
  start: number;
}

function readHolder(file: string): LockHolder | undefined {
  try {
    const holder = JSON.parse(readFileSync(file, 'utf8')) as Partial<LockHolder>;
    return typeof holder.pid === 'number' && typeof holder.start === 'number' ? (holder as LockHolder) : undefined;
  } catch {
    return undefined;
  }
}

/** Where the running daemon answers, from its daemon.json (if that file is its own). */
function endpointOf(paths: StatePaths, pid: number): string {
  try {
    const info = JSON.parse(readFileSync(paths.file('daemon.json'), 'utf8')) as { endpoint?: string; pid?: number };
    if (info.pid === pid && info.endpoint) return info.endpoint;
  } catch {
    // not written yet: it is still starting
  }
  return 'an endpoint it has not published yet (still starting)';
}

/**
 * Makes this process the only daemon of the state dir (`<state>/daemon.lock`): another daemon
 * would adopt or reap this one's VMs from the same ledger. A lock whose process is gone (a daemon
 * killed with SIGKILL) is taken over. Returns the function that releases it.
 */
export function lockStateDir(paths: StatePaths): () => void {
  const file = paths.file('daemon.lock');
  const me: LockHolder = { pid: process.pid, start: processStartTime(process.pid)! };
  for (let attempt = 0; ; attempt++) {
    try {
      writeFileSync(file, JSON.stringify(me), { flag: 'wx', mode: 0o600 });
      return () => {
        const holder = readHolder(file);
        if (holder?.pid === me.pid && holder.start === me.start) rmSync(file, { force: true });
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt === 2) throw err;
    }
    const holder = readHolder(file);
    if (holder && processStartTime(holder.pid) === holder.start) {
      throw new ForkdError('FORKD_ERR_CONFLICT', `a daemon (pid ${holder.pid}) already serves ${paths.root}`, {
        hint: `it listens on ${endpointOf(paths, holder.pid)}: use it, stop it first (kill ${holder.pid}), or give this one another FORKD_HOME`,
      });
    }
    rmSync(file, { force: true }); // its daemon is gone
  }
}
