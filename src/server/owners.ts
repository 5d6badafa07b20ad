import { readFileSync } from 'node:fs';
import type { Owner } from '../api/types.js';
import { ForkdError } from '../errors.js';

/** An owner as recorded: with its process's start time, so a reused pid is never taken for it. */
export interface OwnerRecord extends Owner {
  pidStart?: number;
}

/**
 * When process `pid` started (clock ticks after boot, /proc/PID/stat field 22), or undefined if
 * there is no such process (or it is a zombie). A pid and its start time name one process for
 * good: a later process reusing the pid has another start time.
 */
export function processStartTime(pid: number): number | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // the command name (field 2) may hold spaces and parentheses: count the fields after its last ')'
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  if (fields[0] === 'Z' || fields[0] === 'X') return undefined;
  const start = Number(fields[19]);
  return Number.isFinite(start) ? start : undefined;
}

/** The owner a fork names, its pid pinned to the process running now; a pid not alive here is refused. */
export function ownerRecord(owner: Owner): OwnerRecord {
  if (owner.pid === undefined) return { label: owner.label };
  const pidStart = processStartTime(owner.pid);
  if (pidStart === undefined) {
    throw new ForkdError(
      'FORKD_ERR_BAD_INPUT',
      `owner pid ${owner.pid} is not a running process on the daemon's host`,
      {
        hint: "give the pid of the client process itself (process.pid, os.getpid()), only when it runs on the daemon's host; leave pid out otherwise and use ttl_s with heartbeats",
      },
    );
  }
  return { label: owner.label, pid: owner.pid, pidStart };
}

/** True while the owner's process (if it named one) is the one that forked. */
export function ownerAlive(owner: OwnerRecord): boolean {
  return owner.pid === undefined || processStartTime(owner.pid) === owner.pidStart;
}
