/**
 * Load on the daemon, loopback only: concurrent clients creating, exec-ing and deleting sandboxes
 * for a bounded time. Reports throughput, fork latency, exec latency, failures (other than
 * deliberate 503 cap rejections) and leaked processes.
 *   npm run bench:load [-- --clients 8 --seconds 120]
 * With `--baseline REV`, the same load runs against the daemon of git revision REV too (checked
 * out in a temporary worktree, imported into this process), in alternating rounds, and the
 * ratios are printed: how a change moved the fork path, measured side by side.
 *   npm run bench:load -- --baseline 21bc931 --rounds 2 --seconds 60
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { StatePaths } from '../src/common/state-dir.js';
import { quantile } from '../src/engine/stats.js';

const { values } = parseArgs({
  options: {
    clients: { type: 'string', default: '8' },
    seconds: { type: 'string', default: '120' },
    baseline: { type: 'string' },
    rounds: { type: 'string', default: '1' },
  },
});
const clients = Number(values.clients);
const seconds = Number(values.seconds);
const rounds = Number(values.rounds);
const repo = resolve(import.meta.dirname, '..');

/** The parts of one version of the code the load drives: its daemon and its client. */
interface Side {
  name: string;
  startDaemon: () => Promise<{ endpoint: string; token: string; close(): Promise<void> }>;
  Controller: new (options: { endpoint: string; token: string }) => LoadClient;
}

interface LoadSandbox {
  info: { ready_ms: number };
  exec(argv: string[]): Promise<{ stdout: Buffer }>;
  kill(): Promise<void>;
}

interface LoadClient {
  createSnapshot(tag: string, options: { warmup: string }): Promise<unknown>;
  createSandbox(tag: string): Promise<LoadSandbox>;
  deleteSnapshot(tag: string): Promise<void>;
  close(): Promise<void>;
}

interface Tally {
  seconds: number;
  requests: number;
  sandboxes: number;
  rejected503: number;
  failed: number;
  failures: string[];
  forkMs: number[];
  createMs: number[];
  execMs: number[];
  leaked: number;
}

async function loadSide(name: string, root: string): Promise<Side> {
  const load = (file: string) => import(pathToFileURL(join(root, file)).href) as Promise<Record<string, unknown>>;
  const [daemon, client] = await Promise.all([load('src/server/daemon.ts'), load('src/client/controller.ts')]);
  const Daemon = daemon.Daemon as { start(): ReturnType<Side['startDaemon']> };
  return { name, startDaemon: () => Daemon.start(), Controller: client.Controller as Side['Controller'] };
}

/** QEMU processes of this bench's state dir still running (other state dirs' VMs are not ours). */
function leakedQemu(): number {
  const runDir = `${new StatePaths().root}/run/vm-`;
  return execFileSync('ps', ['-eo', 'args='], { encoding: 'utf8' })
    .split('\n')
    .filter((line) => line.includes('qemu-system') && line.includes(runDir)).length;
}

async function round(side: Side, tally: Tally): Promise<void> {
  const tag = `load-${process.pid}`;
  const daemon = await side.startDaemon();
  const auth = { endpoint: daemon.endpoint, token: daemon.token };
  const setup = new side.Controller(auth);
  await setup.createSnapshot(tag, { warmup: 'echo ready > /tmp/ready' });
  const deadline = Date.now() + seconds * 1000;
  const client = async () => {
    const c = new side.Controller(auth);
    while (Date.now() < deadline) {
      try {
        tally.requests++;
        const created = performance.now();
        const sb = await c.createSandbox(tag);
        tally.createMs.push(performance.now() - created);
        tally.forkMs.push(sb.info.ready_ms);
        tally.sandboxes++;
        for (let i = 0; i < 3; i++) {
          const started = performance.now();
          tally.requests++;
          const r = await sb.exec(['cat', '/tmp/ready']);
          tally.execMs.push(performance.now() - started);
          if (r.stdout.toString() !== 'ready\n')
            throw new Error(`unexpected output ${JSON.stringify(r.stdout.toString())}`);
        }
        tally.requests++;
        await sb.kill();
      } catch (err) {
        if ((err as { status?: number }).status === 503) {
          tally.rejected503++;
          await sleep(50);
          continue;
        }
        tally.failed++;
        tally.failures.push((err as Error).message.split('\n')[0]!);
      }
    }
    await c.close();
  };
  const started = Date.now();
  await Promise.all(Array.from({ length: clients }, client));
  tally.seconds += (Date.now() - started) / 1000;
  await setup.deleteSnapshot(tag);
  await setup.close();
  await daemon.close();
  tally.leaked += leakedQemu();
}

function report(side: Side, t: Tally): void {
  const ms = (values: number[], q: number) => quantile(values, q).toFixed(1);
  console.log(`== ${side.name}: ${t.seconds.toFixed(0)} s`);
  console.log(
    `requests ${t.requests} (${(t.requests / t.seconds).toFixed(1)}/s), sandboxes created and deleted ${t.sandboxes} (${(t.sandboxes / t.seconds).toFixed(1)}/s)`,
  );
  console.log(
    `fork (ready_ms) p50 ${ms(t.forkMs, 0.5)} ms; create request p50 ${ms(t.createMs, 0.5)} ms, p99 ${ms(t.createMs, 0.99)} ms`,
  );
  console.log(`exec latency p50 ${ms(t.execMs, 0.5)} ms, p99 ${ms(t.execMs, 0.99)} ms (n=${t.execMs.length})`);
  console.log(
    `deliberate 503 cap rejections ${t.rejected503}; failed requests ${t.failed}${t.failures.length ? `: ${[...new Set(t.failures)].slice(0, 5).join(' | ')}` : ''}`,
  );
  console.log(`leaked QEMU processes after shutdown: ${t.leaked}`);
}

const emptyTally = (): Tally => ({
  seconds: 0,
  requests: 0,
  sandboxes: 0,
  rejected503: 0,
  failed: 0,
  failures: [],
  forkMs: [],
  createMs: [],
  execMs: [],
  leaked: 0,
});

const sides: Side[] = [await loadSide('this tree', repo)];
let worktree: string | undefined;
if (values.baseline) {
  worktree = join(mkdtempSync(join(tmpdir(), 'forkd-baseline-')), 'tree');
  execFileSync('git', ['-C', repo, 'worktree', 'add', '--detach', worktree, values.baseline], { stdio: 'ignore' });
  symlinkSync(join(repo, 'node_modules'), join(worktree, 'node_modules'));
  const rev = execFileSync('git', ['-C', worktree, 'log', '-1', '--format=%h %s'], { encoding: 'utf8' }).trim();
  sides.unshift(await loadSide(`baseline ${rev.slice(0, 60)}`, worktree));
}
const tallies = new Map(sides.map((side) => [side, emptyTally()]));
try {
  console.log(
    `machine: ${cpus().length} x ${cpus()[0]?.model}; ${clients} clients, ${rounds} round(s) of ${seconds} s per side, alternating, over unix`,
  );
  for (let i = 0; i < rounds; i++) for (const side of sides) await round(side, tallies.get(side)!);
} finally {
  if (worktree) {
    execFileSync('git', ['-C', repo, 'worktree', 'remove', '--force', worktree], { stdio: 'ignore' });
    rmSync(resolve(worktree, '..'), { recursive: true, force: true });
  }
}
for (const side of sides) report(side, tallies.get(side)!);
if (sides.length === 2) {
  const [base, mine] = sides.map((side) => tallies.get(side)!) as [Tally, Tally];
  const ratio = (a: number, b: number) => (a / b).toFixed(2);
  console.log(
    `this tree / baseline: fork p50 ${ratio(quantile(mine.forkMs, 0.5), quantile(base.forkMs, 0.5))}, create p50 ${ratio(quantile(mine.createMs, 0.5), quantile(base.createMs, 0.5))}, requests/s ${ratio(mine.requests / mine.seconds, base.requests / base.seconds)}`,
  );
}
process.exitCode = [...tallies.values()].some((t) => t.failed || t.leaked) ? 1 : 0;
