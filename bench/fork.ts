/**
 * Fork vs cold boot of the same image, side by side in one run:
 *   npm run bench:fork [-- --runs 10]
 * Cold boot, fork latency unpooled and pooled (to the agent answering `restored`), wall clock for
 * N = 1, 16, 50 children, and memory per child (PSS) against a cold-booted VM.
 */
import { cpus } from 'node:os';
import { parseArgs } from 'node:util';
import { Engine } from '../src/engine/engine.js';
import { pssBytes } from '../src/engine/vmm/memory.js';
import { findQemu } from '../src/engine/vmm/qemu-binary.js';
import { median, row } from './stats.js';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '10' } } });
const runs = Number(values.runs);
const MiB = 1024 * 1024;
const tag = `bench-fork-${process.pid}`;

await using engine = new Engine();
const base = await engine.buildBase();
const verdict = await engine.accel(base);
const qemu = await findQemu();
console.log(`machine: ${cpus().length} x ${cpus()[0]?.model}; QEMU ${qemu.version}; accel ${verdict.accel}`);

const coldMs: number[] = [];
const coldPss: number[] = [];
for (let i = 0; i < Math.min(runs, 5); i++) {
  const vm = await engine.boot();
  coldMs.push(vm.readyMs);
  await vm.exec(['true']);
  coldPss.push(await pssBytes(vm.pid));
  await vm.kill();
}

const snap = await engine.snapshot(tag, { warmup: 'echo warm > /tmp/warm' });
try {
  const unpooled: number[] = [];
  for (let i = 0; i < runs; i++) {
    const [child] = await engine.fork(tag, 1);
    unpooled.push(child!.readyMs);
    await child!.kill();
  }

  const pool = await engine.warmPool(tag, 4);
  const pooled: number[] = [];
  for (let i = 0; i < runs; i++) {
    await pool!.filled();
    const [child] = await engine.fork(tag, 1);
    pooled.push(child!.readyMs);
    await child!.kill();
  }
  await engine.warmPool(tag, 0);

  const wall: Array<[number, number, number[]]> = [];
  let childPss: number[] = [];
  for (const n of [1, 16, 50]) {
    const started = performance.now();
    const children = await engine.fork(tag, n);
    const total = performance.now() - started;
    await Promise.all(children.map((c) => c.exec(['true'])));
    if (n === 16) childPss = await Promise.all(children.map((c) => pssBytes(c.pid)));
    wall.push([n, total, children.map((c) => c.readyMs)]);
    await Promise.all(children.map((c) => c.kill()));
  }

  console.log(`snapshot: pause + save device state ${snap.timings.saveMs.toFixed(1)} ms`);
  console.log(row('cold boot (spawn -> agent ready)', coldMs));
  console.log(row('fork, unpooled (spawn -> restored ack)', unpooled));
  console.log(row('fork, from warm pool (-> restored ack)', pooled));
  for (const [n, total, each] of wall)
    console.log(
      `${`fork N=${n} at once`.padEnd(40)} wall ${total.toFixed(0)} ms  (each: median ${median(each).toFixed(0)} ms, max ${Math.max(...each).toFixed(0)} ms)`,
    );
  console.log(
    row(
      'PSS cold-booted VM',
      coldPss.map((b) => b / MiB),
      'MiB',
    ),
  );
  console.log(
    row(
      'PSS forked child (16 running)',
      childPss.map((b) => b / MiB),
      'MiB',
    ),
  );
  console.log(
    `fork vs cold boot: unpooled ${(median(coldMs) / median(unpooled)).toFixed(1)}x faster, pooled ${(median(coldMs) / median(pooled)).toFixed(1)}x faster`,
  );
  console.log(
    `memory per child vs cold-booted VM: ${(100 * (1 - median(childPss) / median(coldPss))).toFixed(0)}% less`,
  );
} finally {
  await engine.snapshots.remove(tag);
}
