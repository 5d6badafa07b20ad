/**
 * The REST API's wire shapes (v1), shared by the daemon that sends them and the client that reads
 * them. Field names are snake_case as on the wire.
 */
export interface SnapshotSummary {
  tag: string;
  created: string;
  parent: string | null;
  memory_mib: number;
  disk_bytes: number;
  accel: string;
  warmup: string | null;
  /** Guest TCP ports each sandbox exposes on 127.0.0.1. */
  ports: number[];
  /** `ready` for every snapshot listed as such; see PendingSnapshot for branches still being written. */
  status: 'ready';
  depth: number;
}

/** POST /v1/sandboxes/:id/branch: 201 with the new snapshot (wait: true), 202 while it is written (wait: false). */
export interface BranchReply extends Partial<Omit<SnapshotSummary, 'status'>> {
  tag: string;
  status: 'ready' | 'writing';
  mode: 'full' | 'diff' | 'live';
  pause_ms: number;
  bytes_written?: number;
  transferred_bytes?: number;
  passes?: number;
  diff_pages?: number;
  total_ms?: number;
}

/** A branch answered early (wait: false) that is still being written, or that failed. */
export interface PendingSnapshot {
  tag: string;
  status: 'writing' | 'failed';
  sandbox: string;
  error?: { code: string; error: string; hint?: string };
}

export interface SnapshotDetail extends SnapshotSummary {
  memory_logical_bytes: number;
  memory_physical_bytes: number;
  /** A diff link's assembled full memory (a cache, rebuilt when missing). */
  cache_bytes: number;
  vmstate_bytes: number;
  ancestors: string[];
  dependents: string[];
  sandboxes: number;
  /** Restored children the warm pool keeps ready (0: no pool). */
  pool_size: number;
}

export interface SandboxInfo {
  id: string;
  snapshot: string;
  pid: number;
  accel: string;
  created: string;
  ready_ms: number;
  /** Guest port -> host port on 127.0.0.1, e.g. `{ "5432": 41234 }`. */
  ports: Record<string, number>;
}

/** POST /v1/sandboxes/:id/eval: what the guest's warm interpreter answered (200 even when the code raised). */
/** POST /v1/snapshots/pull: the snapshots a pack installed (`cached`: it was pulled before and is still there). */
export interface PullReply {
  ref: string;
  tags: string[];
  cached: boolean;
}

/** GET /v1/sandboxes/:id/console: the end of the guest console (kernel messages, /dev/console writes). */
export interface ConsoleReply {
  id: string;
  lines: number;
  text: string;
}

export type EvalReply =
  | { ok: true; value: unknown; repr: string | null; output: string; duration_ms: number }
  | { ok: false; error: { type: string; message: string; stack: string }; output: string; duration_ms: number };
