import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from './readme-snippets.js';
import { runToExit, type Finished } from './run-to-exit.js';

/** The virtual environment the setup command prepares: Debian's Python and packages, the plugin installed. */
export const venvPython = join(repoRoot, '.venv-pytest', 'bin', 'python');

export function requireVenv(): void {
  if (!existsSync(venvPython)) throw new Error(`${venvPython} is missing: run npm run setup (it makes .venv-pytest)`);
}

/** `python -m pytest ARGS` in the repository, as a contributor runs it; resolves when it exits. */
export function runPytest(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<Finished> {
  return runToExit(venvPython, ['-m', 'pytest', '-p', 'no:cacheprovider', ...args], { cwd: repoRoot, env });
}

/** pytest's final tally, e.g. `{ passed: 5, failed: 0 }`. */
export function tally(output: string): Record<string, number> {
  const line = output.trim().split('\n').pop() ?? '';
  return Object.fromEntries([...line.matchAll(/(\d+) (\w+)/g)].map(([, n, what]) => [what!, Number(n)]));
}
