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

/**
 * Forwards each guest port from a free host port on 127.0.0.1 (QEMU picks it: port 0). Forwards
 * are per VM: a fork does not inherit its parent's, so every child gets its own host ports.
 */
export async function exposePorts(qmp: QmpClient, guestPorts: number[]): Promise<PortMap> {
  if (!guestPorts.length) return {};
  for (const port of guestPorts) {
    const out = await qmp.execute<string>('human-monitor-command', {
      'command-line': `hostfwd_add ${NETDEV_ID} tcp:127.0.0.1:0-:${port}`,
    });
    if (out.trim()) throw new ForkdError('FORKD_ERR_INTERNAL', `forwarding guest port ${port} failed: ${out.trim()}`);
  }
  const map = parseHostForwards(await qmp.execute<string>('human-monitor-command', { 'command-line': 'info usernet' }));
  const missing = guestPorts.filter((p) => !(String(p) in map));
  if (missing.length)
    throw new ForkdError('FORKD_ERR_INTERNAL', `QEMU did not report forwards for guest ports ${missing.join(', ')}`);
  return map;
}
