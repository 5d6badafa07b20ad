/**
 * A client process holding sandboxes, for the lease tests: forks them as an owner, prints their
 * ids as one JSON line, then heartbeats (with a lease) or idles until it is killed.
 *
 *   node --import tsx lease-holder.ts ENDPOINT TOKEN SNAPSHOT N LABEL (--ttl SECONDS | --pid)
 */
import { Controller } from '../../src/client/controller.js';

const [endpoint, token, snapshot, n, label, mode, ttl] = process.argv.slice(2);
const controller = new Controller({ endpoint: endpoint!, token: token! });
const sandboxes = await controller.createSandboxes(snapshot!, Number(n), {
  owner: { label: label!, ...(mode === '--pid' ? { pid: process.pid } : {}) },
  ...(mode === '--ttl' ? { ttlS: Number(ttl) } : {}),
});
process.stdout.write(`${JSON.stringify(sandboxes.map((s) => s.id))}\n`);
setInterval(() => {
  if (mode === '--ttl') void controller.heartbeat(label!);
}, 1000);
