/** Prometheus text exposition of the daemon's counters, gauges and the fork latency histogram. */
import { quantile } from '../engine/stats.js';

const FORK_BUCKETS_MS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000];
/** Fork latencies kept for the exact p50/p90 gauges (the newest ones). */
const RECENT_FORKS = 10_000;

export type ReapKind = 'lease' | 'owner' | 'exited';

export interface Gauges {
  sandboxesActive: number;
  /** QEMU processes in the daemon's ledger, by role. */
  vms: Record<string, number>;
  snapshots: number;
  poolSize: number;
  /** Warm pools that gave up refilling after repeated failures. */
  poolsFailing: number;
  heavyInFlight: number;
}

/** One metric: its HELP and TYPE lines, then its samples. */
function metric(name: string, type: 'gauge' | 'counter' | 'histogram', help: string, samples: string[]): string[] {
  return [`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, ...samples];
}

export class Metrics {
  requestsTotal = 0;
  private readonly buckets = FORK_BUCKETS_MS.map(() => 0);
  private forkSumMs = 0;
  /** Forks observed since start: forkd_forks_total, and the histogram's count. */
  private forkCount = 0;
  private readonly recentForksMs: number[] = [];
  /** The most sandboxes alive at once. */
  private peakSandboxes = 0;
  private readonly reaped: Record<ReapKind, number> = { lease: 0, owner: 0, exited: 0 };

  observeReap(kind: ReapKind): void {
    this.reaped[kind]++;
  }

  observeSandboxes(alive: number): void {
    this.peakSandboxes = Math.max(this.peakSandboxes, alive);
  }

  observeFork(ms: number): void {
    this.recentForksMs[this.forkCount % RECENT_FORKS] = ms; // a ring: quantiles need no order
    this.forkCount++;
    this.forkSumMs += ms;
    FORK_BUCKETS_MS.forEach((le, i) => {
      if (ms <= le) this.buckets[i]!++;
    });
  }

  private recentQuantile(q: number): string {
    return this.recentForksMs.length ? quantile(this.recentForksMs, q).toFixed(1) : 'NaN';
  }

  render(g: Gauges): string {
    const lines = [
      ...metric('forkd_sandboxes_active', 'gauge', 'Sandboxes (forked children) the daemon is running.', [
        `forkd_sandboxes_active ${g.sandboxesActive}`,
      ]),
      ...metric(
        'forkd_sandboxes_reaped_total',
        'counter',
        'Sandboxes the daemon removed on its own: lease run out, owner process gone, QEMU exited.',
        Object.entries(this.reaped).map(([reason, n]) => `forkd_sandboxes_reaped_total{reason="${reason}"} ${n}`),
      ),
      ...metric(
        'forkd_vms',
        'gauge',
        'QEMU processes the daemon runs, by role.',
        Object.entries(g.vms).map(([role, n]) => `forkd_vms{role="${role}"} ${n}`),
      ),
      ...metric('forkd_sandboxes_peak', 'gauge', 'The most sandboxes alive at once since the daemon started.', [
        `forkd_sandboxes_peak ${this.peakSandboxes}`,
      ]),
      ...metric('forkd_fork_latency_p50_ms', 'gauge', 'Median fork latency over the last 10,000 forks.', [
        `forkd_fork_latency_p50_ms ${this.recentQuantile(0.5)}`,
      ]),
      ...metric('forkd_fork_latency_p90_ms', 'gauge', '90th percentile fork latency over the last 10,000 forks.', [
        `forkd_fork_latency_p90_ms ${this.recentQuantile(0.9)}`,
      ]),
      ...metric('forkd_forks_total', 'counter', 'Children forked since the daemon started.', [
        `forkd_forks_total ${this.forkCount}`,
      ]),
      ...metric('forkd_fork_latency_ms', 'histogram', 'Time from restore start to the child acknowledging restored.', [
        ...FORK_BUCKETS_MS.map((le, i) => `forkd_fork_latency_ms_bucket{le="${le}"} ${this.buckets[i]}`),
        `forkd_fork_latency_ms_bucket{le="+Inf"} ${this.forkCount}`,
        `forkd_fork_latency_ms_sum ${this.forkSumMs.toFixed(3)}`,
        `forkd_fork_latency_ms_count ${this.forkCount}`,
      ]),
      ...metric('forkd_snapshots', 'gauge', 'Snapshots in the store.', [`forkd_snapshots ${g.snapshots}`]),
      ...metric('forkd_pool_size', 'gauge', 'Restore shells waiting in warm pools.', [`forkd_pool_size ${g.poolSize}`]),
      ...metric('forkd_pools_failing', 'gauge', 'Warm pools that gave up refilling after repeated failures.', [
        `forkd_pools_failing ${g.poolsFailing}`,
      ]),
      ...metric('forkd_heavy_operations_in_flight', 'gauge', 'Snapshots and forks running now (branches join them).', [
        `forkd_heavy_operations_in_flight ${g.heavyInFlight}`,
      ]),
      ...metric('forkd_requests_total', 'counter', 'HTTP requests served.', [
        `forkd_requests_total ${this.requestsTotal}`,
      ]),
    ];
    return `${lines.join('\n')}\n`;
  }
}
