import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CommanderError, InvalidArgumentError } from 'commander';
import { afterAll, describe, expect, test } from 'vitest';
import { commandError } from '../../src/cli/errors.js';
import { ForkdError } from '../../src/errors.js';

const root = join(import.meta.dirname, '../..');
const dir = mkdtempSync(join(tmpdir(), 'forkd-cli-errors-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The CLI from source, with a state dir under a regular file: its first mkdir fails with ENOTDIR. */
function forkdWithBrokenHome(args: string[], env: Record<string, string> = {}) {
  writeFileSync(join(dir, 'not-a-dir'), '');
  const childEnv: NodeJS.ProcessEnv = { ...process.env, FORKD_HOME: join(dir, 'not-a-dir', 'home'), ...env };
  if (!env.FORKD_DEBUG) delete childEnv.FORKD_DEBUG;
  return spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], {
    cwd: root,
    env: childEnv,
    encoding: 'utf8',
    timeout: 60_000,
  });
}

describe('CLI errors', () => {
  test('an unexpected error is FORKD_ERR_INTERNAL with a hint to re-run with FORKD_DEBUG and report it', () => {
    const r = forkdWithBrokenHome(['images', '--json']);
    expect(r.status).toBe(1);
    expect(JSON.parse(r.stdout)).toEqual({
      code: 'FORKD_ERR_INTERNAL',
      error: expect.stringMatching(/^unexpected error: ENOTDIR: not a directory, mkdir /),
      hint: expect.stringMatching(/bug in forkd.*FORKD_DEBUG=all.*report/),
    });
    const text = forkdWithBrokenHome(['images']);
    expect(text.stderr).toMatch(/^forkd: unexpected error: ENOTDIR.*\n {2}hint: this is a bug in forkd/);
    expect(text.stderr).not.toContain('    at ');
  });

  test('with FORKD_DEBUG set, the unexpected error comes with its stack', () => {
    const r = forkdWithBrokenHome(['images'], { FORKD_DEBUG: 'all' });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^Error: ENOTDIR: not a directory, mkdir .*\n {4}at /);
  });

  test('forkd errors keep their code; usage errors are bad input', () => {
    const own = new ForkdError('FORKD_ERR_NOT_FOUND', 'no snapshot tagged x');
    expect(commandError(own)).toBe(own);
    expect(commandError(new InvalidArgumentError('expected a positive integer'))).toMatchObject({
      code: 'FORKD_ERR_BAD_INPUT',
      message: 'expected a positive integer',
    });
    expect(commandError(new CommanderError(1, 'commander.unknownOption', "unknown option '--x'")).code).toBe(
      'FORKD_ERR_BAD_INPUT',
    );
    expect(commandError(new TypeError('x is undefined'))).toMatchObject({
      code: 'FORKD_ERR_INTERNAL',
      message: 'unexpected error: x is undefined',
    });
  });
});
