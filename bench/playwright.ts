/**
 * The Playwright example's todos.spec.ts (examples/playwright-app), wall clock of `playwright test`
 * (2 workers, headless, Debian's chromium), three ways, in interleaved rounds:
 *   npm run bench:playwright [-- --runs 3]
 *   forkd:   the example as it is: the plugin starts a daemon and every test forks the todo app's
 *            snapshot (the app and its database, seeded)
 *   restart: the app on the host (host Node, host PostgreSQL 15), started per test on free ports
 *            against a new initdb + schema.sql
 *   shared:  one host app and cluster per worker, reset to schema.sql's seed before each test
 *            (TRUNCATE ... RESTART IDENTITY, then its INSERTs)
 * The host ways run the same spec files through bench/playwright/host.config.ts, which maps their
 * `forkd-action/playwright` import to bench/playwright/host-fixtures.ts.
 * Each forkd run starts its own daemon (the plugin does), counted in the wall clock. Every run's
 * processes carry a marker in their environment and its temp files live in this bench's scratch
 * dir: after each run, and on Ctrl-C, whatever still carries the marker is reported and ended.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { StatePaths } from '../src/common/state-dir.js';
import { onProcessExit } from '../src/engine/reaper.js';
import { SnapshotStore } from '../src/engine/snapshot/store.js';
import { findQemu } from '../src/engine/vmm/qemu-binary.js';
import { hostPostgresVersion, requireHostPostgres } from './host-postgres.js';
import { median, row } from './stats.js';
import { requireNoDaemon } from './suite-bench.js';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '3' } } });
const runs = Number(values.runs);
requireHostPostgres('bench:playwright');
/** The browser the example's config launches when it is there (else Playwright's own download). */
const CHROMIUM = '/usr/bin/chromium';
if (!existsSync(CHROMIUM)) {
  console.error(`bench:playwright runs the example with Debian's chromium: ${CHROMIUM} is missing`);
  console.error('  hint: apt-get install chromium');
  process.exit(1);
}

const root = join(import.meta.dirname, '..');
const CLI = join(root, 'node_modules/@playwright/test/cli.js');
const CONFIGS = {
  forkd: 'examples/playwright-app/playwright.config.ts',
  restart: 'bench/playwright/host.config.ts',
  shared: 'bench/playwright/host.config.ts',
} as const;
type Method = keyof typeof CONFIGS;
const METHODS = Object.keys(CONFIGS) as Method[];
/** The snapshot examples/playwright-app/playwright.config.ts makes of the todo app. */
const SNAPSHOT = 'app';
const SPEC = 'todos.spec.ts';

// postgres (initdb runs as the postgres user) and chromium keep their files in the runs' TMPDIR
const scratch = mkdtempSync(join(tmpdir(), 'forkd-bench-playwright-'));
chmodSync(scratch, 0o755);
const runTmp = join(scratch, 'tmp');
mkdirSync(runTmp, { mode: 0o755 });
const MARKER_NAME = 'FORKD_BENCH_PLAYWRIGHT_RUN';
const MARKER = `${MARKER_NAME}=${scratch}`;

interface Process {
  pid: number;
  command: string;
}

/** The processes the runs started that are still alive (their environment carries the marker). */
function marked(): Process[] {
  const found: Process[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (!readFileSync(`/proc/${entry}/environ`).includes(`${MARKER}\0`)) continue;
      const command = readFileSync(`/proc/${entry}/cmdline`, 'utf8').replaceAll('\0', ' ').trim();
      found.push({ pid: Number(entry), command });
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

function signalAll(processes: Process[], signal: NodeJS.Signals): void {
  for (const { pid } of processes) {
    try {
      process.kill(pid, signal);
    } catch {
      // gone meanwhile
    }
  }
}

/** What the runs left: after `graceMs` of waiting, SIGTERM, then SIGKILL to what is still there. */
async function endLeftovers(graceMs: number): Promise<Process[]> {
  const left = await stillThereAfter(graceMs);
  if (left.length) {
    signalAll(left, 'SIGTERM');
    signalAll(await stillThereAfter(5_000), 'SIGKILL');
  }
  return left;
}

async function stillThereAfter(ms: number): Promise<Process[]> {
  for (let waited = 0; ; waited += 250) {
    const left = marked();
    if (!left.length || waited >= ms) return left;
    await sleep(250);
  }
}

onProcessExit(() => {
  signalAll(marked(), 'SIGKILL');
  rmSync(scratch, { recursive: true, force: true });
});

let running: ChildProcess | undefined;
let stopping = false;
for (const [signal, code] of [
  ['SIGINT', 130],
  ['SIGTERM', 143],
  ['SIGHUP', 129],
] as const) {
  process.on(signal, () => {
    // a second signal does not wait: the exit hook kills what is left
    if (stopping) process.exit(code);
    stopping = true;
    console.error(`\n${signal}: stopping the run in progress (its fixtures tear down), then what it left`);
    void (async () => {
      if (running?.pid) {
        const closed = once(running, 'close');
        // what a terminal's Ctrl-C does to a `playwright test` in the foreground (its own process group here)
        try {
          process.kill(-running.pid, 'SIGINT');
        } catch {
          // the run has just exited
        }
        await Promise.race([closed, sleep(30_000)]);
      }
      const left = await endLeftovers(0);
      if (left.length) console.error(`ended ${left.length} processes the run left`);
      process.exit(code);
    })();
  });
}

interface Run {
  ms: number;
  tests: number;
  /** `file:line › title` of each test that failed */
  failures: string[];
  /** each test's own time (its fixtures and hooks included), from Playwright's report */
  testMs: number[];
  output: string;
}

interface JsonSpec {
  title: string;
  ok: boolean;
  file: string;
  line: number;
  tests: { results: { duration: number }[] }[];
}

interface JsonSuite {
  specs: JsonSpec[];
  suites?: JsonSuite[];
}

function specsIn(suites: JsonSuite[]): JsonSpec[] {
  return suites.flatMap((suite) => [...suite.specs, ...specsIn(suite.suites ?? [])]);
}

let reports = 0;

/** One `playwright test` in its own process group, as a user runs it. */
async function playwright(method: Method): Promise<Run> {
  const report = join(scratch, `report-${++reports}.json`);
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    NO_COLOR: '1',
    FORKD_BENCH_HOST: method,
    TMPDIR: runTmp,
    PLAYWRIGHT_JSON_OUTPUT_FILE: report,
    [MARKER_NAME]: scratch,
  };
  const args = [CLI, 'test', '--config', CONFIGS[method], '--reporter=list,json', '--output', join(scratch, 'results')];
  const started = performance.now();
  const child = spawn(process.execPath, [...args, SPEC], { cwd: root, env, detached: true });
  running = child;
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr.on('data', (c: Buffer) => (output += c.toString()));
  await once(child, 'close');
  const ms = performance.now() - started;
  running = undefined;
  // an interrupted run: the signal handler sweeps and exits, this one has nothing left to judge
  if (stopping) await new Promise(() => {});

  const left = await endLeftovers(10_000);
  if (left.length) {
    console.error(output);
    throw new Error(
      `the ${method} run left processes running (ended now):\n${left.map((p) => `  ${p.pid} ${p.command}`).join('\n')}`,
    );
  }
  if (!existsSync(report)) {
    console.error(output);
    throw new Error(`the ${method} run wrote no report (output above)`);
  }
  const json = JSON.parse(readFileSync(report, 'utf8')) as {
    stats: { expected: number };
    suites: JsonSuite[];
    errors: unknown[];
  };
  const specs = specsIn(json.suites);
  const run: Run = {
    ms,
    tests: specs.length,
    failures: specs.filter((spec) => !spec.ok).map((spec) => `${spec.file}:${spec.line} › ${spec.title}`),
    testMs: specs.flatMap((spec) => spec.tests.flatMap((test) => test.results.map((result) => result.duration))),
    output,
  };
  if (!json.stats.expected || json.errors.length) {
    console.error(output);
    throw new Error(`the ${method} run passed no test or failed outside them (output above)`);
  }
  return run;
}

const load = () =>
  loadavg()
    .map((l) => l.toFixed(1))
    .join(' ');

await requireNoDaemon('bench:playwright');
console.log(`load average before: ${load()}`);
// the first forkd run makes the app's snapshot when missing; every run warms file caches
console.log('warm-up run of each method (not counted)...');
for (const method of METHODS) await playwright(method);

const qemu = await findQemu();
const { meta } = await new SnapshotStore(new StatePaths()).get(SNAPSHOT);
const playwrightVersion = (
  JSON.parse(readFileSync(join(root, 'node_modules/@playwright/test/package.json'), 'utf8')) as {
    version: string;
  }
).version;
console.log(
  `machine: ${cpus().length} x ${cpus()[0]?.model}; QEMU ${qemu.version}; accel ${meta.accel} (snapshot ${SNAPSHOT})`,
);
console.log(
  `host ${hostPostgresVersion()}; Node ${process.version}; Playwright ${playwrightVersion}; ${execFileSync(CHROMIUM, ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()}`,
);

const times: Partial<Record<Method, number[]>> = {};
const tests: Partial<Record<Method, number[]>> = {};
const testTimes: Partial<Record<Method, number[]>> = {};
const failed: Partial<Record<Method, Map<string, number>>> = {};
for (let i = 0; i < runs; i++) {
  for (const method of METHODS) {
    const run = await playwright(method);
    (times[method] ??= []).push(run.ms);
    (tests[method] ??= []).push(run.tests);
    (testTimes[method] ??= []).push(...run.testMs);
    const counts = (failed[method] ??= new Map());
    for (const failure of run.failures) counts.set(failure, (counts.get(failure) ?? 0) + 1);
  }
  console.log(`round ${i + 1}/${runs} done (load average ${load()})`);
}

console.log(`\nwall clock of \`playwright test ${SPEC}\` (2 workers), process start to exit:`);
for (const method of METHODS) {
  const ms = times[method]!;
  console.log(`${row(method, ms)}  tests ${[...new Set(tests[method])].join('/')}`);
}
console.log('each test, its fixtures (a fork, or a server start or reset) and hooks included:');
for (const method of METHODS) console.log(row(`${method}: per test`, testTimes[method]!));
const ratio = (method: Method) => (median(times[method]!) / median(times.forkd!)).toFixed(2);
console.log(`\nrestart/forkd ${ratio('restart')}x, shared/forkd ${ratio('shared')}x`);
for (const method of METHODS) {
  const counts = failed[method]!;
  if (!counts.size) console.log(`${method}: every test passed in every run`);
  for (const [failure, n] of counts) console.log(`${method}: failed in ${n} of ${runs} runs: ${failure}`);
}
console.log(`load average after: ${load()}`);
console.log('nothing left running (no process carrying the runs\u2019 marker)');
