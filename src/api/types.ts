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
}

export interface SnapshotDetail extends SnapshotSummary {
  memory_logical_bytes: number;
  memory_physical_bytes: number;
  vmstate_bytes: number;
  ancestors: string[];
  dependents: string[];
  sandboxes: number;
}

export interface SandboxInfo {
  id: string;
  snapshot: string;
  pid: number;
  accel: string;
  created: string;
  ready_ms: number;
}
