import { spawn } from 'node:child_process';

export interface Finished {
  status: number | null;
  /** stdout and stderr together */
  output: string;
  /** wall clock from spawn to exit */
  ms: number;
}

/** Runs a command in its own process, as a user does, to its exit. */
export function runToExit(command: string, args: string[], options: { cwd: string; env: NodeJS.ProcessEnv }) {
  const started = performance.now();
  return new Promise<Finished>((resolve, reject) => {
    const child = spawn(command, args, options);
    let output = '';
    child.stdout.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr.on('data', (c: Buffer) => (output += c.toString()));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, output, ms: performance.now() - started }));
  });
}
