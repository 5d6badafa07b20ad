/** Prometheus text exposition of the daemon's counters, gauges and the fork latency histogram. */
const FORK_BUCKETS_MS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000];

export interface Gauges {
  sandboxesActive: number;
  snapshots: number;
  poolSize: number;
  heavyInFlight: number;
}

export class Metrics {
  forksTotal = 0;
  requestsTotal = 0;
  private readonly buckets = FORK_BUCKETS_MS.map(() => 0);
  private forkSumMs = 0;
  private forkCount = 0;

  observeFork(ms: number): void {
    this.forksTotal++;
    this.forkCount++;
    this.forkSumMs += ms;
    FORK_BUCKETS_MS.forEach((le, i) => {
      if (ms <= le) this.buckets[i]!++;
    });
  }

  render(g: Gauges): string {
    const lines = [
      '# HELP forkd_sandboxes_active Sandboxes (forked children) the daemon is running.',
      '# TYPE forkd_sandboxes_active gauge',
      `forkd_sandboxes_active ${g.sandboxesActive}`,
      '# HELP forkd_forks_total Children forked since the daemon started.',
      '# TYPE forkd_forks_total counter',
      `forkd_forks_total ${this.forksTotal}`,
      '# HELP forkd_fork_latency_ms Time from restore start to the child acknowledging restored.',
      '# TYPE forkd_fork_latency_ms histogram',
      ...FORK_BUCKETS_MS.map((le, i) => `forkd_fork_latency_ms_bucket{le="${le}"} ${this.buckets[i]}`),
      `forkd_fork_latency_ms_bucket{le="+Inf"} ${this.forkCount}`,
      `forkd_fork_latency_ms_sum ${this.forkSumMs.toFixed(3)}`,
      `forkd_fork_latency_ms_count ${this.forkCount}`,
      '# HELP forkd_snapshots Snapshots in the store.',
      '# TYPE forkd_snapshots gauge',
      `forkd_snapshots ${g.snapshots}`,
      '# HELP forkd_pool_size Restore shells waiting in warm pools.',
      '# TYPE forkd_pool_size gauge',
      `forkd_pool_size ${g.poolSize}`,
      '# HELP forkd_heavy_operations_in_flight Snapshots and forks running now (branches join them).',
      '# TYPE forkd_heavy_operations_in_flight gauge',
      `forkd_heavy_operations_in_flight ${g.heavyInFlight}`,
      '# HELP forkd_requests_total HTTP requests served.',
      '# TYPE forkd_requests_total counter',
      `forkd_requests_total ${this.requestsTotal}`,
    ];
    return `${lines.join('\n')}\n`;
  }
}
