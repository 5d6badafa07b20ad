/**
 * The example Vitest suite (examples/vitest-postgres), wall clock of `vitest run`, three ways, in
 * interleaved rounds:
 *   npm run bench:vitest [-- --runs 5]
 *   forkd:    the suite as it is: a forked child of the postgres recipe per test
 *   template: one shared host PostgreSQL, CREATE DATABASE ... TEMPLATE per test
 *   initdb:   initdb + pg_ctl start per test on the host
 * The host baselines swap `forkd-action/vitest` for bench/vitest-suite/host-fixtures.ts.
 * "portable": the files all three can run (tables, checkpoint, file scope; 12 tests).
 * "server-level": ALTER SYSTEM, roles, DROP DATABASE (10 tests); a shared server cannot isolate
 * them, so the template baseline runs it once to show what fails.
 * Each forkd run starts its own daemon (the plugin does), counted in the wall clock.
 */
import { cpus } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { findQemu } from '../src/engine/vmm/qemu-binary.js';
import { hostPostgresVersion, requireHostPostgres } from './host-postgres.js';
import { median, row } from './stats.js';
import { runToExit } from '../test/helpers/run-to-exit.js';
import { requireNoDaemon } from './suite-bench.js';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '5' } } });
const runs = Number(values.runs);
requireHostPostgres('bench:vitest');

const root = join(import.meta.dirname, '..');
const CONFIGS = {
  forkd: 'examples/vitest-postgres/vitest.config.ts',
  template: 'bench/vitest-suite/host.config.ts',
  initdb: 'bench/vitest-suite/host.config.ts',
} as const;
type Method = keyof typeof CONFIGS;
const SUITES = {
  portable: ['tests/tables', 'tests/checkpoint', 'tests/file-scope'],
  'server-level': ['tests/databases', 'tests/system', '-t', '^(?!.*sandbox fixture)'],
} as const;
type Suite = keyof typeof SUITES;

interface Run {
  ms: number;
  passed: number;
  failed: number;
  output: string;
}

/** One `vitest run` in its own process, as a user runs it. */
async function vitest(method: Method, suite: Suite): Promise<Run> {
  const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: '1', FORKD_BENCH_HOST: method };
  for (const name of ['VITEST', 'VITEST_POOL_ID', 'VITEST_WORKER_ID']) delete env[name];
  const args = [join(root, 'node_modules/vitest/vitest.mjs'), 'run', '--config', CONFIGS[method], ...SUITES[suite]];
  const { ms, output } = await runToExit(process.execPath, args, { cwd: root, env });
  const count = (what: string) => Number(new RegExp(`Tests .*?(\\d+) ${what}`).exec(output)?.[1] ?? 0);
  return { ms, passed: count('passed'), failed: count('failed'), output };
}

async function timed(method: Method, suite: Suite): Promise<number> {
  const r = await vitest(method, suite);
  if (r.failed || !r.passed) {
    console.error(r.output);
    throw new Error(`${method} failed ${r.failed} tests of the ${suite} suite (output above)`);
  }
  return r.ms;
}

const qemu = await findQemu();
console.log(`machine: ${cpus().length} x ${cpus()[0]?.model}; QEMU ${qemu.version}; host ${hostPostgresVersion()}`);
await requireNoDaemon('bench:vitest');
// the first forkd run builds the postgres snapshot when missing; every run warms file caches
console.log('warm-up run of each method (not counted)...');
for (const method of Object.keys(CONFIGS) as Method[]) await timed(method, 'portable');

const times: Record<Suite, Partial<Record<Method, number[]>>> = { portable: {}, 'server-level': {} };
for (let i = 0; i < runs; i++) {
  for (const [suite, methods] of [
    ['portable', ['forkd', 'template', 'initdb']],
    ['server-level', ['forkd', 'initdb']],
  ] as [Suite, Method[]][]) {
    for (const method of methods) (times[suite][method] ??= []).push(await timed(method, suite));
  }
  console.log(`round ${i + 1}/${runs} done`);
}
const shared = await vitest('template', 'server-level');

console.log('\nwall clock of `vitest run` (2 workers), process start to exit:');
for (const suite of Object.keys(times) as Suite[]) {
  for (const [method, ms] of Object.entries(times[suite])) console.log(row(`${suite}: ${method}`, ms));
}
const ratio = (suite: Suite, slow: Method, fast: Method) =>
  (median(times[suite][slow]!) / median(times[suite][fast]!)).toFixed(2);
console.log(
  `\nportable: initdb/forkd ${ratio('portable', 'initdb', 'forkd')}x, template/forkd ${ratio('portable', 'template', 'forkd')}x`,
);
console.log(`server-level: initdb/forkd ${ratio('server-level', 'initdb', 'forkd')}x`);
console.log(
  `server-level on one shared server (template): ${shared.failed} of ${shared.passed + shared.failed} tests fail (no isolation of server state)`,
);
