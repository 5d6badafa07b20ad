import { readFile } from 'node:fs/promises';

/** Proportional set size of a process: its private pages plus its share of pages mapped by several. */
export async function pssBytes(pid: number): Promise<number> {
  const rollup = await readFile(`/proc/${pid}/smaps_rollup`, 'utf8');
  const kb = /^Pss:\s+(\d+) kB/m.exec(rollup)?.[1];
  if (kb === undefined) throw new Error(`no Pss in /proc/${pid}/smaps_rollup`);
  return Number(kb) * 1024;
}
