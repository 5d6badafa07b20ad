/** What the suite benches (bench:vitest, bench:pytest) share: a test runner timed in its own process. */
import { spawn } from 'node:child_process';
import { Controller } from '../src/client/controller.js';

export interface TimedRun {
  ms: number;
  /** stdout and stderr together */
  output: string;
}

/** Runs a test runner as a user does, in its own process: wall clock from spawn to exit. */
export function timedRun(command: string, args: string[], options: { cwd: string; env: NodeJS.ProcessEnv }) {
  const started = performance.now();
  return new Promise<TimedRun>((resolve, reject) => {
    const child = spawn(command, args, options);
    let output = '';
    child.stdout.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr.on('data', (c: Buffer) => (output += c.toString()));
    child.on('error', reject);
    child.on('close', () => resolve({ ms: performance.now() - started, output }));
  });
}

/** Exits when a daemon answers: it would serve the runs instead of the daemon each run's plugin starts (and times). */
export async function requireNoDaemon(bench: string): Promise<void> {
  let running = false;
  try {
    running = (await new Controller().health()).ok;
  } catch {
    // no daemon: none to resolve (the constructor throws) or none answers
  }
  if (!running) return;
  console.error(`${bench} times the daemon the plugin starts per run: stop the running \`forkd serve\` first`);
  process.exit(1);
}
