/** What the Vitest integration is configured with (`forkd({...})` in vitest.config.ts). */
export interface ForkdSnapshotSpec {
  /** A recipe name (recipes/<name>), built and snapshotted if the tag does not exist yet. */
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

export interface ForkdVitestOptions {
  /** Snapshot tag -> how to make it when missing. Tags that exist are reused as they are. */
  snapshots: Record<string, ForkdSnapshotSpec>;
  /** The snapshot the `sandbox` fixture forks (default: the first one). */
  sandbox?: string;
  /** The snapshot the `postgres` fixture forks (default: the first one made from the postgres recipe). */
  postgres?: string;
  /** Warm children kept per snapshot while the run lasts (default: Vitest's worker count, at most 4; 0: none). */
  pool?: number;
}

/** What the global setup hands the test workers (`inject('forkd')`). */
export interface ForkdConnection {
  endpoint: string;
  token: string;
  sandbox: string | null;
  postgres: string | null;
}

export const OPTIONS_ENV = 'FORKD_VITEST_OPTIONS';
/** Tags of checkpoints taken in tests; the run's teardown removes those left. */
export const CHECKPOINT_PREFIX = 'vitest-ckpt-';
