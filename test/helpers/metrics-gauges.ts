import type { Gauges } from '../../src/server/metrics.js';

/** The gauges of an idle daemon, with `overrides`: what a Metrics.render test sets is what it checks. */
export function gauges(overrides: Partial<Gauges> = {}): Gauges {
  return { sandboxesActive: 0, snapshots: 0, vms: {}, poolSize: 0, poolsFailing: 0, heavyInFlight: 0, ...overrides };
}
