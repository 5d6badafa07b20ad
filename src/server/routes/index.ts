import type { DaemonContext } from '../context.js';
import { Router } from '../router.js';
import { ownerRoutes } from './owners.js';
import { sandboxRoutes } from './sandboxes.js';
import { snapshotRoutes } from './snapshots.js';
import { systemRoutes } from './system.js';

/** The daemon's router: every route of the API table with its handler. */
export function apiRouter(ctx: DaemonContext): Router {
  const router = new Router();
  systemRoutes(router, ctx);
  snapshotRoutes(router, ctx);
  sandboxRoutes(router, ctx);
  ownerRoutes(router, ctx);
  return router;
}
