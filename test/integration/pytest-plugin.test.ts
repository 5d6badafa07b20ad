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
 * runner-plugins/pytest/live against real engines in this file's state dir: the example under -n 2
 * (19 tests, its seed taken once), an xdist worker killed with SIGKILL mid-test, SIGINT/SIGTERM to
 * the run (nothing left within 7.5 s: VMs, checkpoints), the controller killed outright (its daemon
 * and VMs gone; its checkpoint and run dir swept by the next run), a run on an engine it did not
 * start (owners, checkpoints and pool given back), psycopg2, a missing snapshot, a failing test's
 * report. Each live test checks no QEMU, checkpoint or run dir is left after it.
 */
test('the pytest plugin against a real engine', async () => {
  requireVenv();
  const env = home.env({ FORKD_CLI: `${process.execPath} ${join(repoRoot, 'bin', 'forkd.js')}` });
  for (const name of ['FORKD_ENDPOINT', 'FORKD_TOKEN', 'FORKD_SNAPSHOT', 'FORKD_SNAPSHOT_SOURCE']) delete env[name];
  const { status, output } = await runPytest(['-v', 'runner-plugins/pytest/live'], env);
  expect(status, output).toBe(0);
  const counts = tally(output);
  expect(counts.passed, output).toBe(8);
  expect(home.qemuProcesses()).toEqual([]);
}, 3_600_000);
