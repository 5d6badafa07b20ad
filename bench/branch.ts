/**
 * BRANCH of a running 512 MiB child, per mode, with 16 MiB and 128 MiB dirtied since its fork:
 *   npm run bench:branch [-- --runs 5]
 * Each run forks a fresh child, writes the dirty data into its tmpfs, branches it and kills it.
 * Reports the source's pause (p50/p90), the total time and the bytes the snapshot needs, and for
 * diff the ratio of bytes written to bytes dirtied.
 */
import { cpus } from 'node:os';
import { parseArgs } from 'node:util';
import { Engine } from '../src/engine/engine.js';
import type { BranchMode } from '../src/api/types.js';
import { findQemu } from '../src/engine/vmm/qemu-binary.js';
import { quantile } from '../src/engine/stats.js';
import { median } from './stats.js';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '5' } } });
const runs = Number(values.runs);
const MiB = 1024 * 1024;
const root = `bench-branch-${process.pid}`;

await using engine = new Engine();
const verdict = await engine.accel(await engine.buildBase());
const qemu = await findQemu();
console.log(`machine: ${cpus().length} x ${cpus()[0]?.model}; QEMU ${qemu.version}; accel ${verdict.accel}`);
await engine.snapshot(root, { memoryMiB: 512, warmup: 'echo warm > /tmp/warm' });
try {
  console.log(`512 MiB child, ${runs} runs per row; pause = how long the source's vCPU was stopped`);
  for (const dirtyMiB of [16, 128]) {
    for (const mode of ['full', 'diff', 'live'] as BranchMode[]) {
      const pause: number[] = [];
      const total: number[] = [];
      const written: number[] = [];
      for (let i = 0; i < runs; i++) {
        const [child] = await engine.fork(root, 1);
        try {
          const dd = await child!.exec(`dd if=/dev/urandom of=/tmp/dirty bs=1M count=${dirtyMiB} 2>&1`);
          if (dd.exitCode !== 0) throw new Error(`dirtying failed: ${dd.stdout.toString()}`);
          const r = await engine.branch(child!, `${root}-${mode}-${dirtyMiB}-${i}`, mode);
          pause.push(r.pauseMs);
          total.push(r.totalMs);
          written.push(r.bytesWritten);
        } finally {
          await child!.kill();
          await engine.removeSnapshot(`${root}-${mode}-${dirtyMiB}-${i}`).catch(() => {});
        }
      }
      const ratio = mode === 'diff' ? `  written/dirtied ${(median(written) / (dirtyMiB * MiB)).toFixed(2)}x` : '';
      console.log(
        `${`${mode}, ${dirtyMiB} MiB dirty`.padEnd(22)} pause p50 ${median(pause).toFixed(1)} ms  p90 ${quantile(pause, 0.9).toFixed(1)} ms` +
          `  total ${median(total).toFixed(0)} ms  written ${(median(written) / MiB).toFixed(1)} MiB${ratio}`,
      );
    }
  }
} finally {
  await engine.removeSnapshot(root, { cascade: true });
}
