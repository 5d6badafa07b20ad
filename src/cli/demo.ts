import { randomBytes } from 'node:crypto';
import type { Engine } from '../engine/engine.js';
import type { OnProgress } from '../engine/progress.js';
import { quantile } from '../engine/stats.js';
import { pssBytes } from '../engine/vmm/memory.js';
import type { StartedVm } from '../engine/vmm/vm.js';

export interface DemoReport {
  accel: string;
  boot_ms: number;
  snapshot_ms: number;
  fork: {
    n: number;
    p50_ms: number;
    p90_ms: number;
    max_ms: number;
    total_ms: number;
    pooled_p50_ms: number;
    pooled_n: number;
  };
  speedup_vs_boot: number;
  memory: { cold_boot_pss_mib: number; child_pss_mib_p50: number; saving_pct: number };
  children_ok: number;
}

const WARMUP = 'echo warmed-in-parent > /tmp/warm; sleep 86400 >/dev/null 2>&1 &';
const POOL_SIZE = 4;
const MiB = 1024 * 1024;

const round = (n: number, digits = 1) => Number(n.toFixed(digits));

/**
 * The main job: boot the base image cold, snapshot a warmed parent, fork n children (then a few
 * more from a warm pool), check each child, and compare timings and memory. Cleans up everything.
 */
export async function runDemo(engine: Engine, n: number, onProgress: OnProgress): Promise<DemoReport> {
  const tag = `demo-${process.pid}-${randomBytes(3).toString('hex')}`;
  const children: StartedVm[] = [];
  let snapshotTaken = false;
  try {
    onProgress({ task: 'demo', phase: 'cold boot of the base image' });
    const cold = await engine.boot();
    await cold.exec(['true']);
    const coldPss = await pssBytes(cold.pid);
    await cold.kill();

    onProgress({ task: 'demo', phase: 'snapshot a warmed parent', detail: tag });
    const snapshot = await engine.snapshot(tag, { warmup: WARMUP });
    snapshotTaken = true;

    onProgress({ task: 'demo', phase: `fork ${n} children` });
    const forkStarted = performance.now();
    children.push(...(await engine.fork(tag, n)));
    const forkTotal = performance.now() - forkStarted;
    const forkMs = children.map((c) => c.readyMs);

    onProgress({ task: 'demo', phase: 'fork from a warm pool', detail: `${POOL_SIZE} spares` });
    const pool = await engine.warmPool(tag, POOL_SIZE);
    const pooledMs: number[] = [];
    for (let i = 0; i < POOL_SIZE; i++) {
      await pool?.filled(); // as between tests: the pool refills while the previous one runs
      const [child] = await engine.fork(tag, 1);
      children.push(child!);
      pooledMs.push(child!.readyMs);
    }

    onProgress({ task: 'demo', phase: 'check every child' });
    const outputs = await Promise.all(children.map((c) => c.exec(['sh', '-c', 'cat /tmp/warm; hostname'])));
    // A child counts when it saw the parent's state and has an identity of its own.
    const hostnames = outputs.map((o) => o.stdout.toString().split('\n')[1]);
    const ok = outputs.filter(
      (o, i) =>
        o.exitCode === 0 &&
        o.stdout.toString().startsWith('warmed-in-parent\n') &&
        hostnames.indexOf(hostnames[i]) === hostnames.lastIndexOf(hostnames[i]),
    ).length;
    const childPss = await Promise.all(children.slice(0, n).map((c) => pssBytes(c.pid)));
    const childPssP50 = quantile(childPss, 0.5);
    const forkP50 = quantile(forkMs, 0.5);
    return {
      accel: children[0]?.accel ?? 'unknown',
      boot_ms: round(cold.readyMs),
      snapshot_ms: round(snapshot.timings.saveMs),
      fork: {
        n,
        p50_ms: round(forkP50),
        p90_ms: round(quantile(forkMs, 0.9)),
        max_ms: round(Math.max(...forkMs)),
        total_ms: round(forkTotal),
        pooled_p50_ms: round(quantile(pooledMs, 0.5)),
        pooled_n: pooledMs.length,
      },
      speedup_vs_boot: round(cold.readyMs / forkP50),
      memory: {
        cold_boot_pss_mib: round(coldPss / MiB),
        child_pss_mib_p50: round(childPssP50 / MiB),
        saving_pct: round(100 * (1 - childPssP50 / coldPss), 0),
      },
      children_ok: ok,
    };
  } finally {
    await Promise.all(children.map((c) => c.kill()));
    await engine.close();
    if (snapshotTaken) await engine.snapshots.remove(tag).catch(() => {});
  }
}

export function formatDemo(r: DemoReport): string {
  const rows: Array<[string, string]> = [
    ['accelerator', r.accel],
    ['cold boot (spawn -> agent ready)', `${r.boot_ms} ms`],
    ['snapshot (pause + save device state)', `${r.snapshot_ms} ms`],
    [`fork ${r.fork.n} children, each (p50 / p90)`, `${r.fork.p50_ms} ms / ${r.fork.p90_ms} ms`],
    [`fork ${r.fork.n} children, wall clock`, `${r.fork.total_ms} ms`],
    [`fork from a full warm pool (p50 of ${r.fork.pooled_n})`, `${r.fork.pooled_p50_ms} ms`],
    ['fork vs cold boot', `${r.speedup_vs_boot}x faster`],
    ['memory: cold-booted VM (PSS)', `${r.memory.cold_boot_pss_mib} MiB`],
    ['memory: forked child (PSS p50)', `${r.memory.child_pss_mib_p50} MiB (${r.memory.saving_pct}% less)`],
    ['children that saw the parent state', `${r.children_ok} of ${r.fork.n + r.fork.pooled_n}`],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join('\n');
}
