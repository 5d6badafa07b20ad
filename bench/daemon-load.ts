/**
 * Load on the daemon, loopback only: concurrent clients creating, exec-ing and deleting sandboxes
 * for a bounded time. Reports failures (other than deliberate 503 cap rejections), leaked
 * processes, and exec latency.
 *   npm run bench:load [-- --clients 8 --seconds 120]
 */
import { execFileSync } from 'node:child_process';
import { cpus } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { Controller } from '../src/client/controller.js';
import { quantile } from '../src/engine/stats.js';
import { Daemon } from '../src/server/daemon.js';
import { ForkdError } from '../src/errors.js';

const { values } = parseArgs({
  options: { clients: { type: 'string', default: '8' }, seconds: { type: 'string', default: '120' } },
});
const clients = Number(values.clients);
const seconds = Number(values.seconds);
const tag = `load-${process.pid}`;

const daemon = await Daemon.start();
const setup = new Controller({ endpoint: daemon.endpoint, token: daemon.token });
await setup.createSnapshot(tag, { warmup: 'echo ready > /tmp/ready' });

const execMs: number[] = [];
const counts = { requests: 0, sandboxes: 0, rejected503: 0, failed: 0 };
const failures: string[] = [];
const deadline = Date.now() + seconds * 1000;

async function client(): Promise<void> {
  const c = new Controller({ endpoint: daemon.endpoint, token: daemon.token });
  while (Date.now() < deadline) {
    try {
      counts.requests++;
      const sb = await c.createSandbox(tag);
      counts.sandboxes++;
      for (let i = 0; i < 3; i++) {
        const started = performance.now();
        counts.requests++;
        const r = await sb.exec(['cat', '/tmp/ready']);
        execMs.push(performance.now() - started);
        if (r.stdout.toString() !== 'ready\n')
          throw new Error(`unexpected output ${JSON.stringify(r.stdout.toString())}`);
      }
      counts.requests++;
      await sb.kill();
    } catch (err) {
      if (err instanceof ForkdError && err.status === 503) {
        counts.rejected503++;
        await sleep(50);
        continue;
      }
      counts.failed++;
      failures.push((err as Error).message.split('\n')[0]!);
    }
  }
  await c.close();
}

const started = Date.now();
await Promise.all(Array.from({ length: clients }, client));
const elapsed = (Date.now() - started) / 1000;
await setup.deleteSnapshot(tag);
await setup.close();
await daemon.close();
const leaked = execFileSync('ps', ['-eo', 'args='], { encoding: 'utf8' })
  .split('\n')
  .filter((line) => line.includes('qemu-system') && line.includes('/run/vm-')).length;

console.log(
  `machine: ${cpus().length} x ${cpus()[0]?.model}; ${clients} clients for ${elapsed.toFixed(0)} s over ${daemon.endpoint.split(':')[0]}`,
);
console.log(
  `requests ${counts.requests}, sandboxes created and deleted ${counts.sandboxes} (${(counts.sandboxes / elapsed).toFixed(1)}/s)`,
);
console.log(
  `deliberate 503 cap rejections ${counts.rejected503}; failed requests ${counts.failed}${failures.length ? `: ${[...new Set(failures)].slice(0, 5).join(' | ')}` : ''}`,
);
console.log(
  `exec latency p50 ${quantile(execMs, 0.5).toFixed(1)} ms, p99 ${quantile(execMs, 0.99).toFixed(1)} ms (n=${execMs.length})`,
);
console.log(`leaked QEMU processes after shutdown: ${leaked}`);
process.exitCode = counts.failed || leaked ? 1 : 0;
