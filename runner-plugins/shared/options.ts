/** What a runner plugin (Vitest, Playwright) is configured with, and what its setup hands the workers. */

export interface ForkdSnapshotSpec {
  /**
   * A recipe: a name (recipes/<name> of this package), or a directory of your project holding a
   * recipe.json (`./e2e/app-recipe`: relative to playwright.config.ts's directory, or to Vitest's root). Built and snapshotted if the tag
   * does not exist yet; a directory's files are sent to the engine, never its path.
   */
  recipe?: string;
  /**
   * A pack to pull instead of building, when the tag does not exist yet: `owner/name[@version]`
   * through FORKD_HUB_URL, or an https:// URL of a .forkd.tar.zst.
   */
  pull?: string;
  /** A warm-up command for a snapshot of the base image. */
  warmup?: string;
  memoryMiB?: number;
  ports?: number[];
}

export interface ForkdRunOptions {
  /**
   * Snapshot name -> how to make it when missing. Names that exist on the engine are reused as
   * they are.
   *
   * After the forkd GitHub Action (it exports FORKD_SNAPSHOT, the tag it made, and
   * FORKD_SNAPSHOT_SOURCE, the recipe or pack it made it from), a spec that is only that recipe
   * or pack (`{ pg: { recipe: 'postgres' } }` after `snapshot: postgres`) stands for the Action's
   * snapshot: `pg` forks it, and no second snapshot is taken. Left out (or empty), the run forks
   * the Action's snapshot. So one config serves both: locally the plugin makes the snapshot, in
   * CI it forks the Action's.
   */
  snapshots?: Record<string, ForkdSnapshotSpec>;
  /** The snapshot the `sandbox` fixture forks (default: the first one). */
  sandbox?: string;
  /**
   * The snapshot the `postgres` fixture forks (default: the first one made from the postgres
   * recipe, the Action's included).
   */
  postgres?: string;
  /**
   * The snapshot the Playwright `app` fixture forks (default: the first one made from a recipe
   * directory); `baseURL` points at its child's first port.
   */
  app?: string;
  /** Warm children kept per snapshot while the run lasts (default: the runner's worker count, at most 4; 0: none). */
  pool?: number;
}

/** What the run's setup hands the test workers. */
export interface ForkdConnection {
  endpoint: string;
  token: string;
  /** Which runner's run this is: its sandboxes' owner and its checkpoints' tags start with it. */
  runner: Runner;
  /** This run's id: its sandboxes' owner and its checkpoints' tags carry it. */
  runId: string;
  /** Tags on the engine. */
  sandbox: string | null;
  postgres: string | null;
  app: string | null;
  /** Each name in `snapshots` -> its tag on the engine (the Action's tag for a name it stands for). */
  tags: Record<string, string>;
}

export type Runner = 'vitest' | 'playwright';

const CHECKPOINT = '-ckpt-';

/** The owner of a run's sandboxes: one heartbeat keeps them all, and the teardown releases them together. */
export const runOwner = (runner: Runner, runId: string): string => `${runner}-${runId}`;

/** A run's checkpoints start with this: its teardown removes those left, and no other run's. */
export const runCheckpoints = (runner: Runner, runId: string): string => `${runner}${CHECKPOINT}${runId}-`;

/** A checkpoint some test run took (of any runner, the pytest plugin's included), not a snapshot to offer. */
export const isRunCheckpoint = (tag: string): boolean => /^[a-z]+-ckpt-/.test(tag);

/**
 * The lease of a run's sandboxes (seconds): the run's main process renews it every
 * HEARTBEAT_MS, so a run that dies without its teardown leaves nothing for longer.
 */
export const LEASE_S = 60;
export const HEARTBEAT_MS = 10_000;
