import { ForkdError } from '../../errors.js';
import { NETDEV_ID } from './qemu-args.js';
import type { QmpClient } from './qmp.js';

/** Guest port -> host port on 127.0.0.1, e.g. `{ "5432": 41234 }`. */
export type PortMap = Record<string, number>;

export function validatePorts(ports: unknown): number[] {
  if (
    !Array.isArray(ports) ||
    ports.some((p) => !Number.isInteger(p) || p < 1 || p > 65535) ||
    new Set(ports).size !== ports.length
  ) {
    throw new ForkdError(
      'FORKD_ERR_BAD_INPUT',
      `ports must be distinct integers from 1 to 65535 (got ${JSON.stringify(ports)})`,
    );
  }
  return ports as number[];
}

/** Parses `info usernet`: the host ports QEMU bound for each guest port. */
export function parseHostForwards(usernet: string): PortMap {
  const map: PortMap = {};
  for (const m of usernet.matchAll(/TCP\[HOST_FORWARD\]\s+\d+\s+127\.0\.0\.1\s+(\d+)\s+\S+\s+(\d+)/g))
    map[m[2]!] = Number(m[1]);
  return map;
}

/** Host ports from FORKD_PORT_RANGE=LOW-HIGH (for firewalls or predictable ports); unset: any free port. */
export function hostPortRange(env: NodeJS.ProcessEnv = process.env): { low: number; high: number } | undefined {
  const spec = env.FORKD_PORT_RANGE;
  if (!spec) return undefined;
  const m = /^(\d+)-(\d+)$/.exec(spec);
  const [low, high] = m ? [Number(m[1]), Number(m[2])] : [0, 0];
  if (!m || low < 1024 || high > 65535 || low > high) {
    throw new ForkdError('FORKD_ERR_BAD_INPUT', `FORKD_PORT_RANGE=${spec} is not a port range`, {
      hint: 'use LOW-HIGH within 1024-65535, e.g. FORKD_PORT_RANGE=40000-40999',
    });
  }
  return { low, high };
}

/** Attempts per guest port: each range candidate once (up to this many), or port 0 a few times. */
const MAX_ATTEMPTS = 64;
const ANY_PORT_ATTEMPTS = 3;

/** Host ports to try, in order: port 0 (the kernel picks a free one), or the range from a random start. */
function candidates(range: { low: number; high: number } | undefined): number[] {
  if (!range) return Array.from({ length: ANY_PORT_ATTEMPTS }, () => 0);
  const size = range.high - range.low + 1;
  const start = Math.floor(Math.random() * size); // parallel forks start apart
  return Array.from({ length: Math.min(size, MAX_ATTEMPTS) }, (_, i) => range.low + ((start + i) % size));
}

/**
 * Forwards each guest port from a host port on 127.0.0.1. Forwards are per VM: a fork does not
 * inherit its parent's, so every child gets its own host ports. A host port that turns out to be
 * taken (another process, or a child forked at the same moment) is retried with the next one.
 */
export async function exposePorts(qmp: QmpClient, guestPorts: number[], range = hostPortRange()): Promise<PortMap> {
  if (!guestPorts.length) return {};
  for (const port of guestPorts) {
    let failure = '';
    for (const host of candidates(range)) {
      failure = (
        await qmp.execute<string>('human-monitor-command', {
          'command-line': `hostfwd_add ${NETDEV_ID} tcp:127.0.0.1:${host}-:${port}`,
        })
      ).trim();
      if (!failure) break;
    }
    if (failure) {
      throw new ForkdError(
        'FORKD_ERR_BUSY',
        `no free host port for guest port ${port}${range ? ` in ${range.low}-${range.high}` : ''}: ${failure}`,
        { hint: range ? 'widen FORKD_PORT_RANGE or free some of its ports' : 'the host is out of free ports' },
      );
    }
  }
  const map = parseHostForwards(await qmp.execute<string>('human-monitor-command', { 'command-line': 'info usernet' }));
  const missing = guestPorts.filter((p) => !(String(p) in map));
  if (missing.length)
    throw new ForkdError('FORKD_ERR_INTERNAL', `QEMU did not report forwards for guest ports ${missing.join(', ')}`);
  return map;
}
