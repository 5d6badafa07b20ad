/** What the suite benches (bench:vitest, bench:pytest) share, beside the timed run (test/helpers/run-to-exit.ts). */
import { Controller } from '../src/client/controller.js';

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
