import type { Engine } from '../engine/engine.js';
import type { Hub } from '../hub/hub.js';
import type { BranchTracker } from './branches.js';
import type { Metrics } from './metrics.js';
import type { Ledger } from './ledger.js';
import type { OperationSlots } from './slots.js';

/** What route handlers share: the engine, the Hub over its snapshots and the daemon's own bookkeeping. */
export interface DaemonContext {
  engine: Engine;
  hub: Hub;
  ledger: Ledger;
  slots: OperationSlots;
  metrics: Metrics;
  branches: BranchTracker;
  /** Pulls may fetch plain http:// packs (forkd serve --allow-http-pull); otherwise https:// only. */
  allowHttpPull: boolean;
  /** POST /v1/snapshots takes recipe_files (forkd serve --allow-recipe-upload): their build runs on this host. */
  allowRecipeUpload: boolean;
}
