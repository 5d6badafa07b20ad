/**
 * The processes a job's engine left: its QEMUs (their command lines name the job's FORKD_HOME)
 * and its CLI or daemon (running the engine's script with that FORKD_HOME). Found through /proc,
 * so the post step finds them even when the main step was killed before it could say what it
 * started. Other processes of later steps inherit FORKD_HOME too, and are left alone.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { pidAlive } from '../engine/process-alive.js';

function read(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return ''; // gone meanwhile, or not ours to read
  }
}

export function jobProcesses(home: string, engineScript: string): number[] {
  const env = `\0FORKD_HOME=${home}\0`;
  return readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name) && Number(name) !== process.pid)
    .filter((pid) => {
      const cmdline = read(`/proc/${pid}/cmdline`);
      if (cmdline.includes(home)) return true;
      return cmdline.includes(engineScript) && `\0${read(`/proc/${pid}/environ`)}`.includes(env);
    })
    .map(Number);
}

function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch {
    // already gone
  }
}

/** SIGTERM, a grace period for their own cleanup, then SIGKILL; returns the pids that needed it. */
export async function terminate(pids: number[], graceMs: number): Promise<number[]> {
  for (const pid of pids) signal(pid, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  while (pids.some(pidAlive) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
  const stubborn = pids.filter(pidAlive);
  for (const pid of stubborn) signal(pid, 'SIGKILL');
  return stubborn;
}

/** Stops whatever of the job is still running; returns how many there were. */
export async function reapJobProcesses(home: string, engineScript: string, graceMs: number): Promise<number> {
  const pids = jobProcesses(home, engineScript);
  await terminate(pids, graceMs);
  return pids.length;
}
