/**
 * The example pytest suite (examples/pytest-postgres), wall clock of `python -m pytest -n 2`, three
 * ways, in interleaved rounds:
 *   npm run bench:pytest [-- --runs 5]
 *   forkd:    the suite as it is: the pytest-forkd plugin starts a daemon and every test forks the
 *             postgres recipe's snapshot (the seeded tests fork a checkpoint taken after the seed)
 *   template: one shared host PostgreSQL, CREATE DATABASE ... TEMPLATE per test
 *   initdb:   initdb + pg_ctl start per test on the host
 * The host baselines run the same files with `-p no:forkd -p host_fixtures`:
 * bench/pytest-suite/host_fixtures.py stands in for pytest_forkd.fixtures.
 * "portable": test_tables.py and test_shared.py, which all three can run.
 * "server-level": test_system.py (ALTER SYSTEM, roles, DROP DATABASE) without the one test that needs
 * the sandbox; a shared server cannot isolate them, so the template baseline runs it once to show what fails.
 * Each forkd run starts its own daemon (the plugin does), counted in the wall clock.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { StatePaths, stateDir } from '../src/common/state-dir.js';
import { SnapshotStore } from '../src/engine/snapshot/store.js';
import { findQemu } from '../src/engine/vmm/qemu-binary.js';
import { PG_BIN, hostPostgresVersion, requireHostPostgres } from './host-postgres.js';
import { median, row } from './stats.js';
import { runToExit } from '../test/helpers/run-to-exit.js';
import { requireNoDaemon } from './suite-bench.js';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '5' } } });
const runs = Number(values.runs);
requireHostPostgres('bench:pytest');

const root = join(import.meta.dirname, '..');
const python = join(root, '.venv-pytest/bin/python');
if (!existsSync(python)) {
  console.error(`bench:pytest runs the example with the pytest plugin's venv: ${python} is missing`);
  console.error('  hint: npm run setup');
  process.exit(1);
}
const EXAMPLE = 'examples/pytest-postgres';
/** The tag examples/pytest-postgres/pytest.ini gives the postgres recipe's snapshot. */
const SNAPSHOT = 'pg';
const METHODS = ['forkd', 'template', 'initdb'] as const;
type Method = (typeof METHODS)[number];
const SUITES = {
  // test_shared.py's module-scoped pair (the second test reads what the first wrote) stays on one
  // worker through its xdist_group mark (the example's pytest.ini: --dist loadgroup)
  portable: [`${EXAMPLE}/test_shared.py`, `${EXAMPLE}/test_tables.py`],
  'server-level': [`${EXAMPLE}/test_system.py`, '-k', 'not test_the_sandbox_runs_commands'],
} as const;
type Suite = keyof typeof SUITES;

interface Run {
  ms: number;
  passed: number;
  /** failed tests and errors (in setup or teardown) */
  failed: number;
  /** the node ids of the failed tests and errors */
  failures: string[];
  output: string;
}

/** One `python -m pytest -n 2` in its own process, as a user runs it. */
async function pytest(method: Method, suite: Suite): Promise<Run> {
  const env: NodeJS.ProcessEnv = { ...process.env, FORKD_CLI: `${process.execPath} ${join(root, 'bin/forkd.js')}` };
  const args = ['-m', 'pytest', '-n', '2', '-p', 'no:cacheprovider', '-rfE', ...SUITES[suite]];
  if (method !== 'forkd') {
    Object.assign(env, {
      FORKD_BENCH_HOST: method,
      FORKD_BENCH_PG_BIN: PG_BIN,
      PYTHONPATH: [join(root, 'bench/pytest-suite'), process.env.PYTHONPATH].filter(Boolean).join(':'),
    });
    args.push('-p', 'no:forkd', '-p', 'host_fixtures');
  }
  const { ms, output } = await runToExit(python, args, { cwd: root, env });
  const summary = /^=+ (.*) in [\d.]+s/m.exec(output)?.[1] ?? '';
  const count = (what: string) => Number(new RegExp(`(\\d+) ${what}`).exec(summary)?.[1] ?? 0);
  const failures = [...output.matchAll(/^(?:FAILED|ERROR) (\S+)/gm)].map((m) => m[1]!);
  return { ms, passed: count('passed'), failed: count('failed') + count('errors?'), failures, output };
}

/** The tests each suite passed under forkd: the baselines must pass the same number. */
const passedBy: Partial<Record<Suite, number>> = {};

async function timed(method: Method, suite: Suite): Promise<number> {
  const r = await pytest(method, suite);
  const expected = (passedBy[suite] ??= r.passed);
  if (r.failed || !r.passed || r.passed !== expected) {
    console.error(r.output);
    throw new Error(
      `${method} passed ${r.passed} of the ${suite} suite's ${expected}, ${r.failed} failed (output above)`,
    );
  }
  return r.ms;
}

/** QEMUs of this state dir and host servers of the baselines still running: a run left them. */
async function leftovers(): Promise<string> {
  const pattern = `qemu-system.*${stateDir()}|postgres -D ${tmpdir()}/forkd-bench-pg-`;
  for (let waited = 0; ; waited += 500) {
    const found = spawnSync('pgrep', ['-af', pattern], { encoding: 'utf8' }).stdout.trim();
    if (!found || waited >= 10_000) return found;
    await sleep(500);
  }
}

await requireNoDaemon('bench:pytest');
// the first forkd run takes the snapshot when missing; every run warms file caches
console.log('warm-up run of each method (not counted)...');
for (const method of METHODS) await timed(method, 'portable');

const qemu = await findQemu();
const { meta } = await new SnapshotStore(new StatePaths()).get(SNAPSHOT);
console.log(
  `machine: ${cpus().length} x ${cpus()[0]?.model}; QEMU ${qemu.version}; accel ${meta.accel} (snapshot ${SNAPSHOT})`,
);
console.log(`host ${hostPostgresVersion()}`);

const times: Record<Suite, Partial<Record<Method, number[]>>> = { portable: {}, 'server-level': {} };
for (let i = 0; i < runs; i++) {
  for (const [suite, methods] of [
    ['portable', METHODS],
    ['server-level', ['forkd', 'initdb']],
  ] as [Suite, readonly Method[]][]) {
    for (const method of methods) (times[suite][method] ??= []).push(await timed(method, suite));
  }
  console.log(`round ${i + 1}/${runs} done`);
}
const shared = await pytest('template', 'server-level');

console.log('\nwall clock of `python -m pytest -n 2`, process start to exit:');
for (const suite of Object.keys(times) as Suite[]) {
  console.log(`${suite}: ${passedBy[suite]} tests`);
  for (const [method, ms] of Object.entries(times[suite])) console.log(row(`${suite}: ${method}`, ms));
}
const ratio = (suite: Suite, method: Method) =>
  (median(times[suite][method]!) / median(times[suite].forkd!)).toFixed(2);
console.log(
  `\nportable: initdb/forkd ${ratio('portable', 'initdb')}x, template/forkd ${ratio('portable', 'template')}x`,
);
console.log(`server-level: initdb/forkd ${ratio('server-level', 'initdb')}x`);
console.log(
  `server-level on one shared server (template): ${shared.failed} of ${shared.passed + shared.failed} tests fail (no isolation of server state):`,
);
for (const failure of shared.failures) console.log(`  ${failure}`);

const left = await leftovers();
if (left) {
  console.error(`left running after the runs:\n${left}`);
  process.exit(1);
}
console.log('nothing left running (no QEMU of the state dir, no host server of the baselines)');
