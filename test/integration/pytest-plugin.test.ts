import { join } from 'node:path';
import { afterAll, expect, test } from 'vitest';
import { IsolatedHome, NOTHING_LEFT } from '../helpers/isolated-home.js';
import { requireVenv, runPytest, tally } from '../helpers/python.js';
import { repoRoot } from '../helpers/readme-snippets.js';

const home = new IsolatedHome();

afterAll(() => {
  expect(home.leftovers()).toEqual(NOTHING_LEFT);
  home.remove();
});

/**
 * runner-plugins/pytest/live against real engines: each run starts its own `forkd serve` in this
 * file's state dir. The example under -n 2 (19 tests), an xdist worker killed with SIGKILL
 * mid-test, SIGINT/SIGTERM to the run (nothing left within 7.5 s), the controller killed outright,
 * psycopg2, a missing snapshot. Each live test checks no QEMU is left after it.
 */
test('the pytest plugin against a real engine', async () => {
  requireVenv();
  const env = home.env({ FORKD_CLI: `${process.execPath} ${join(repoRoot, 'bin', 'forkd.js')}` });
  for (const name of ['FORKD_ENDPOINT', 'FORKD_TOKEN', 'FORKD_SNAPSHOT', 'FORKD_SNAPSHOT_SOURCE']) delete env[name];
  const { status, output } = await runPytest(['-v', 'runner-plugins/pytest/live'], env);
  expect(status, output).toBe(0);
  const counts = tally(output);
  expect(counts.passed, output).toBe(7);
  expect(home.qemuProcesses()).toEqual([]);
}, 3_600_000);
