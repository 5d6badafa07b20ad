import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from './readme-snippets.js';

/** The virtual environment the setup command prepares: Debian's Python and packages, the plugin installed. */
export const venvPython = join(repoRoot, '.venv-pytest', 'bin', 'python');

export function requireVenv(): void {
  if (!existsSync(venvPython)) throw new Error(`${venvPython} is missing: run npm run setup (it makes .venv-pytest)`);
}

/** `python -m pytest ARGS` in the repository, as a contributor runs it; resolves when it exits. */
export function runPytest(
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<{ status: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(venvPython, ['-m', 'pytest', '-p', 'no:cacheprovider', ...args], { cwd: repoRoot, env });
    let output = '';
    child.stdout.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr.on('data', (c: Buffer) => (output += c.toString()));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, output }));
  });
}

/** pytest's final tally, e.g. `{ passed: 5, failed: 0 }`. */
export function tally(output: string): Record<string, number> {
  const line = output.trim().split('\n').pop() ?? '';
  return Object.fromEntries([...line.matchAll(/(\d+) (\w+)/g)].map(([, n, what]) => [what!, Number(n)]));
}
