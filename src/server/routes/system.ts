import { packageVersion } from '../../common/package-root.js';
import type { DaemonContext } from '../context.js';
import type { Router } from '../router.js';

export function systemRoutes(router: Router, ctx: DaemonContext): void {
  router
    .on('GET', '/healthz', async () => ({ status: 200, json: { ok: true } }))
    .on('GET', '/version', async () => ({ status: 200, json: { version: packageVersion, api: 'v1' } }))
    .on('GET', '/metrics', async () => ({
      status: 200,
      contentType: 'text/plain; version=0.0.4',
      body: ctx.metrics.render({
        sandboxesActive: ctx.registry.size,
        snapshots: (await ctx.engine.snapshots.list()).length,
        poolSize: ctx.engine.pooledChildren,
        heavyInFlight: ctx.slots.active,
      }),
    }));
}
