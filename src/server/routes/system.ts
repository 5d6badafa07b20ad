import { availableParallelism, totalmem } from 'node:os';
import { openApiDocument } from '../../api/openapi.js';
import { API } from '../../api/routes.js';
import { packageVersion } from '../../common/package-root.js';
import type { DaemonContext } from '../context.js';
import type { Router } from '../router.js';

export function systemRoutes(router: Router, ctx: DaemonContext): void {
  const openapi = openApiDocument();
  router
    .on(API.health, async () => ({ status: 200, json: { ok: true } }))
    .on(API.version, async () => ({
      status: 200,
      json: {
        version: packageVersion,
        api: 'v1',
        host: { cpus: availableParallelism(), memory_mib: Math.floor(totalmem() / 2 ** 20) },
      },
    }))
    .on(API.openapi, async () => ({ status: 200, json: openapi }))
    .on(API.metrics, async () => ({
      status: 200,
      contentType: 'text/plain; version=0.0.4',
      body: ctx.metrics.render({
        sandboxesActive: ctx.ledger.size,
        vms: ctx.ledger.roles(),
        snapshots: (await ctx.engine.snapshots.list()).length,
        poolSize: ctx.engine.pooledChildren,
        poolsFailing: ctx.engine.failingPools,
        heavyInFlight: ctx.slots.active,
      }),
    }));
}
