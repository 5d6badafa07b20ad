import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { Controller } from '../../src/client/controller.js';
import { Daemon } from '../../src/server/daemon.js';
import { IsolatedHome, NOTHING_LEFT } from '../helpers/isolated-home.js';

const home = new IsolatedHome();
const root = join(import.meta.dirname, '../..');
const SNAPSHOT = 'plain'; // the one test/fixtures/vitest-killed configures: taken once here, reused by its run

/** Every process this file starts: each must have exited by the end. */
const started: ChildProcess[] = [];

function start(file: string, args: string[], options: { detached?: boolean; env?: NodeJS.ProcessEnv } = {}) {
  const child = spawn(file, args, {
    cwd: root,
    env: options.env ?? home.env(),
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: options.detached ?? false,
  });
  started.push(child);
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr.on('data', (c: Buffer) => (output += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, exited, output: () => output };
}

/** A stand-in for a test runner: the process a daemon is told to exit with. */
function runner() {
  return start('sleep', ['600']);
}

/** `forkd serve ARGS` from the sources, in its own process, once it answers. */
async function serve(args: string[]) {
  const info = join(home.root, 'daemon.json');
  rmSync(info, { force: true }); // a killed daemon leaves its own
  const daemon = start(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'serve', ...args]);
  const deadline = Date.now() + 120_000;
  while (!existsSync(info)) {
    if (daemon.child.exitCode !== null || Date.now() > deadline)
      throw new Error(`forkd serve did not start: ${daemon.output()}`);
    await sleep(50);
  }
  const { endpoint, token_file } = JSON.parse(readFileSync(info, 'utf8')) as { endpoint: string; token_file: string };
  return { ...daemon, client: new Controller({ endpoint, token: readFileSync(token_file, 'utf8').trim() }) };
}

/** Polls until `done()` holds; returns how long that took (ms), or throws after `timeoutMs`. */
async function within(timeoutMs: number, done: () => boolean): Promise<number> {
  const begun = performance.now();
  while (!done()) {
    if (performance.now() - begun > timeoutMs) throw new Error(`not done within ${timeoutMs} ms`);
    await sleep(50);
  }
  return Math.round(performance.now() - begun);
}

/** Audit log lines about what the daemon did on its own (not requests). */
function auditEvents(): Array<Record<string, unknown>> {
  const file = join(home.root, 'audit.log');
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .filter((entry) => 'event' in entry);
}

/**
 * What a killed daemon leaves is records of VMs that died with it: the next daemon finds every
 * one dead (none to adopt) and removes them. Returns how many it reaped.
 */
async function nextDaemonReapsTheDead(): Promise<number> {
  const before = auditEvents().length;
  const next = await Daemon.start({ paths: home.paths });
  expect(next.ledger.list()).toEqual([]); // nothing was alive to adopt
  await next.close();
  const events = auditEvents().slice(before);
  const reaped = events.filter((e) => e.event === 'reap');
  expect(reaped.map((e) => e.reason)).toEqual(reaped.map(() => 'qemu exited while no daemon ran'));
  expect(events.filter((e) => e.event === 'adopt')).toEqual([]);
  expect(home.entries('ledger')).toEqual([]);
  return reaped.length;
}

function stopEvents(): Array<Record<string, unknown>> {
  return auditEvents().filter((e) => e.event === 'stop');
}

beforeAll(async () => {
  await home.engine.snapshot(SNAPSHOT, { warmup: 'echo ok > /tmp/ok' });
}, 300_000);

afterAll(async () => {
  for (const { pid } of started.filter((c) => c.exitCode === null && c.signalCode === null)) {
    try {
      process.kill(pid!, 'SIGKILL');
    } catch {
      // gone meanwhile
    }
  }
  const leaked = home.killLeakedQemu();
  await home.engine.removeSnapshot(SNAPSHOT);
  await home.engine.close();
  expect(leaked).toEqual([]);
  expect(home.leftovers()).toEqual(NOTHING_LEFT);
  home.remove();
}, 60_000);

/** A Vitest run holding a sandbox and a warm spare, in a process group of its own (as a terminal's foreground job). */
async function holdingRun() {
  const upFile = join(home.root, 'vitest-up');
  rmSync(upFile, { force: true });
  const env = home.env({ NO_COLOR: '1', FORKD_TEST_UP_FILE: upFile });
  for (const name of ['FORKD_ENDPOINT', 'FORKD_TOKEN', 'FORKD_SNAPSHOT', 'FORKD_SNAPSHOT_SOURCE']) delete env[name];
  delete env.VITEST; // the inner run is a run of its own, not a worker of this one
  delete env.VITEST_POOL_ID;
  delete env.VITEST_WORKER_ID;
  const run = start(
    process.execPath,
    ['node_modules/vitest/vitest.mjs', 'run', '--config', 'test/fixtures/vitest-killed/vitest.config.ts'],
    { env, detached: true },
  );
  await within(300_000, () => {
    if (run.child.exitCode !== null) throw new Error(`the run ended before its sandbox was up: ${run.output()}`);
    return existsSync(upFile);
  });
  const vms = home.qemuProcesses().length;
  expect(vms).toBeGreaterThanOrEqual(2); // the test's sandbox and the pool's spare
  /** Whatever the group still runs (workers a killed run leaves, as it leaves them) goes. */
  const reap = () => {
    try {
      process.kill(-run.child.pid!, 'SIGKILL');
    } catch {
      // the group is gone already
    }
  };
  return { run, vms, reap };
}

describe("the Vitest plugin's own daemon", () => {
  test('a run SIGKILLed while it holds a sandbox and a spare: no QEMU of it left within 5 s', async () => {
    const { run, vms, reap } = await holdingRun();
    try {
      run.child.kill('SIGKILL'); // the run's main process, where its daemon runs
      await run.exited;
      const ms = await within(5000, () => home.qemuProcesses().length === 0);
      console.log(`Vitest run SIGKILLed: its ${vms} QEMUs gone ${ms} ms after its main process`);
    } finally {
      reap();
    }
    expect(await nextDaemonReapsTheDead()).toBeGreaterThanOrEqual(2);
  }, 360_000);

  test("a terminal's Ctrl-C (SIGINT to the run's process group): its VMs stopped by the run, no console log kept", async () => {
    const { run, reap } = await holdingRun();
    try {
      process.kill(-run.child.pid!, 'SIGINT');
      await run.exited;
      // QEMU has a session of its own: the signal reaches the run, whose teardown stops the VMs
      // cleanly, instead of killing them under it (a VM that dies so counts as failed, its log kept)
      await within(5000, () => home.qemuProcesses().length === 0);
      expect(home.entries('logs')).toEqual([]);
    } finally {
      reap();
    }
  }, 360_000);
});

describe('forkd serve --exit-with PID', () => {
  test('the process ends: the daemon stops with exit 0, kills its VMs and says why', async () => {
    const sleeper = runner();
    const pid = sleeper.child.pid!;
    const daemon = await serve(['--exit-with', String(pid)]);
    await daemon.client.setPool(SNAPSHOT, 1);
    const sandboxes = await daemon.client.createSandboxes(SNAPSHOT, 2);
    expect(home.qemuProcesses().length).toBeGreaterThanOrEqual(2);
    await daemon.client.close();
    for (const sb of sandboxes) expect(existsSync(`/proc/${sb.info.pid}`)).toBe(true);

    const killed = performance.now();
    sleeper.child.kill('SIGKILL');
    expect(await daemon.exited).toBe(0);
    const ms = Math.round(performance.now() - killed);
    console.log(`--exit-with process killed: the daemon stopped ${ms} ms later, exit 0`);
    expect(ms).toBeLessThan(10_000);
    expect(home.qemuProcesses()).toEqual([]);
    const reason = `exit-with process ${pid} exited`;
    expect(stopEvents().at(-1)).toMatchObject({ event: 'stop', reason });
    expect(daemon.output()).toContain(`or the end of process ${pid} stops it`);
    expect(daemon.output()).toContain(`forkd serve: stopped (${reason}); every sandbox it started is gone`);
    for (const file of ['daemon.json', 'forkd.sock', 'forkd.pid', 'daemon.lock'])
      expect(existsSync(join(home.root, file)), file).toBe(false);
    expect(home.entries('ledger')).toEqual([]);
    expect(home.entries('run')).toEqual([]);
  }, 300_000);

  test('SIGTERM still stops it, and the audit log says so', async () => {
    const sleeper = runner();
    const daemon = await serve(['--exit-with', String(sleeper.child.pid)]);
    await daemon.client.close();
    daemon.child.kill('SIGTERM');
    expect(await daemon.exited).toBe(0);
    expect(stopEvents().at(-1)).toMatchObject({ event: 'stop', reason: 'SIGTERM' });
    sleeper.child.kill('SIGKILL');
    await sleeper.exited;
  }, 300_000);

  test('the daemon itself SIGKILLed: its VMs die with it (parent-death signal)', async () => {
    const sleeper = runner();
    const daemon = await serve(['--exit-with', String(sleeper.child.pid)]);
    await daemon.client.setPool(SNAPSHOT, 1);
    await daemon.client.createSandboxes(SNAPSHOT, 2);
    await daemon.client.close();
    const vms = home.qemuProcesses().length;
    expect(vms).toBeGreaterThanOrEqual(2);
    daemon.child.kill('SIGKILL');
    await daemon.exited;
    const ms = await within(5000, () => home.qemuProcesses().length === 0);
    console.log(`forkd serve --exit-with SIGKILLed: its ${vms} QEMUs gone ${ms} ms after it`);
    sleeper.child.kill('SIGKILL');
    await sleeper.exited;
    expect(await nextDaemonReapsTheDead()).toBeGreaterThanOrEqual(vms);
  }, 300_000);

  test('a pid that is no number, or no running process: a usage error with a hint, nothing started or changed', async () => {
    const gone = spawnSync('true');
    expect(gone.pid).toBeGreaterThan(0);
    const before = readdirSync(home.root).sort();
    const audit = auditEvents().length;
    const forkdServe = (pid: string) =>
      spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'serve', '--exit-with', pid], {
        cwd: root,
        env: home.env(),
        encoding: 'utf8',
        timeout: 60_000,
      });
    for (const bad of ['abc', '0', '-5', '12.5', '']) {
      const r = forkdServe(bad);
      expect([r.status, r.signal], bad).toEqual([1, null]);
      expect(r.stderr).toContain(`option '--exit-with <pid>' argument '${bad}' is invalid. expected a process id`);
      expect(r.stderr).toContain("such as the test runner's own");
    }
    const dead = forkdServe(String(gone.pid));
    expect([dead.status, dead.signal]).toEqual([1, null]);
    expect(dead.stderr).toBe(
      `forkd: exit-with pid ${gone.pid} is not a running process on this host\n` +
        "  hint: give the pid of a live process on the daemon's host whose end should stop the daemon, such as the test runner's own (os.getpid(), process.pid, $$)\n",
    );
    expect(readdirSync(home.root).sort()).toEqual(before);
    expect(auditEvents()).toHaveLength(audit);
    expect(home.qemuProcesses()).toEqual([]);
  }, 120_000);
});
