/** The job summary: what the engine did for the job, from the daemon's last metrics. */
import * as core from '@actions/core';
import type { ActionState } from './state.js';

export async function writeSummary(state: ActionState, metrics: string): Promise<void> {
  const value = (name: string) => new RegExp(`^${name} (\\S+)$`, 'm').exec(metrics)?.[1] ?? 'n/a';
  const ms = (name: string) => {
    const v = value(name);
    return v === 'n/a' || v === 'NaN' ? 'n/a' : `${v} ms`;
  };
  await core.summary
    .addHeading('forkd', 3)
    .addTable([
      ['accelerator', 'snapshot', 'forks served', 'fork latency p50', 'fork latency p90', 'peak children'].map(
        (data) => ({ data, header: true }),
      ),
      [
        state.accel,
        state.tag,
        value('forkd_forks_total'),
        ms('forkd_fork_latency_p50_ms'),
        ms('forkd_fork_latency_p90_ms'),
        value('forkd_sandboxes_peak'),
      ],
    ])
    .write();
}
