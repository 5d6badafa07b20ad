/**
 * The one place where the wire's snake_case shapes and the in-process camelCase ones meet: exec
 * (the REST API and the guest agent speak the same exec shape), eval, ping, snapshots and branches.
 */
import type {
  BranchMode,
  BranchReply,
  CreateSnapshotRequest,
  EvalReply,
  EvalResult,
  ExecOptions,
  ExecReply,
  ExecRequest,
  ExecResult,
  PingReply,
  SnapshotSummary,
} from './types.js';

// ---- exec -----------------------------------------------------------------------------------

export function execRequest(command: string | string[], options: ExecOptions = {}): ExecRequest {
  return {
    ...(typeof command === 'string' ? { shell: command } : { argv: command }),
    ...(options.env ? { env: options.env } : {}),
    ...(options.cwd ? { cwd: options.cwd } : {}),
    ...(options.stdin !== undefined ? { stdin: Buffer.from(options.stdin).toString('base64') } : {}),
    ...(options.timeoutMs !== undefined ? { timeout_ms: options.timeoutMs } : {}),
    ...(options.maxOutputBytes !== undefined ? { max_output: options.maxOutputBytes } : {}),
  };
}

/** A validated exec request (exactly one of argv and shell) as the engine's call. */
export function execCall(request: ExecRequest): { command: string | string[]; options: ExecOptions } {
  const options: ExecOptions = {};
  if (request.env) options.env = request.env;
  if (request.cwd) options.cwd = request.cwd;
  if (request.stdin !== undefined) options.stdin = Buffer.from(request.stdin, 'base64');
  if (request.timeout_ms !== undefined) options.timeoutMs = request.timeout_ms;
  if (request.max_output !== undefined) options.maxOutputBytes = request.max_output;
  return { command: request.argv ?? request.shell!, options };
}

export function execReply(r: ExecResult): ExecReply {
  return {
    exit_code: r.exitCode,
    signal: r.signal,
    timed_out: r.timedOut,
    stdout: r.stdout.toString('base64'),
    stderr: r.stderr.toString('base64'),
    stdout_truncated: r.stdoutTruncated,
    stderr_truncated: r.stderrTruncated,
    duration_ms: r.durationMs,
  };
}

/** An exec reply from the daemon, or from the guest agent once its signal number is named. */
export function execResult(reply: Partial<ExecReply>): ExecResult {
  return {
    exitCode: Number(reply.exit_code),
    signal: (reply.signal as NodeJS.Signals | null | undefined) ?? null,
    timedOut: reply.timed_out === true,
    stdout: Buffer.from(reply.stdout ?? '', 'base64'),
    stderr: Buffer.from(reply.stderr ?? '', 'base64'),
    stdoutTruncated: reply.stdout_truncated === true,
    stderrTruncated: reply.stderr_truncated === true,
    durationMs: Number(reply.duration_ms),
  };
}

// ---- eval and ping --------------------------------------------------------------------------

export function evalReply({ durationMs, ...result }: EvalResult): EvalReply {
  return { ...result, duration_ms: durationMs };
}

export function evalResult({ duration_ms: durationMs, ...result }: EvalReply): EvalResult {
  return { ...result, durationMs };
}

export function pingReply(ping: { version: string; uptimeMs: number; jobs: number }): PingReply {
  return { pong: true, version: ping.version, uptime_ms: ping.uptimeMs, jobs: ping.jobs };
}

// ---- snapshots and branches -----------------------------------------------------------------

/** The options a snapshot is created with, in-process. */
export interface SnapshotRequestOptions {
  recipe?: string;
  memoryMiB?: number;
  warmup?: string;
  ports?: number[];
}

export function createSnapshotRequest(tag: string, options: SnapshotRequestOptions = {}): CreateSnapshotRequest {
  return {
    tag,
    ...(options.recipe ? { recipe: options.recipe } : {}),
    ...(options.memoryMiB ? { memory_mib: options.memoryMiB } : {}),
    ...(options.warmup ? { warmup: options.warmup } : {}),
    ...(options.ports ? { ports: options.ports } : {}),
  };
}

export function snapshotOptions(request: CreateSnapshotRequest): SnapshotRequestOptions {
  return {
    ...(request.recipe ? { recipe: request.recipe } : {}),
    ...(request.memory_mib ? { memoryMiB: request.memory_mib } : {}),
    ...(request.ports ? { ports: request.ports } : {}),
    ...(request.warmup ? { warmup: request.warmup } : {}),
  };
}

/** What the wire needs of a stored snapshot (the engine's SnapshotInfo has it). */
export interface StoredSnapshot {
  tag: string;
  diskBytes: number;
  meta: {
    created: string;
    parent: string | null;
    memoryMiB: number;
    accel: string;
    warmup: string | null;
    ports: number[];
    depth?: number;
  };
}

export function snapshotSummary(s: StoredSnapshot): SnapshotSummary {
  return {
    tag: s.tag,
    created: s.meta.created,
    parent: s.meta.parent,
    memory_mib: s.meta.memoryMiB,
    disk_bytes: s.diskBytes,
    accel: s.meta.accel,
    warmup: s.meta.warmup,
    ports: s.meta.ports,
    status: 'ready',
    depth: s.meta.depth ?? 0,
  };
}

/** `{ bootMs: 812.4 }` -> `{ boot_ms: 812 }` */
export function timingsReply(timings: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(timings).map(([k, v]) => [k.replace(/Ms$/, '_ms'), Math.round(v)]));
}

const tenths = (ms: number) => Math.round(ms * 10) / 10;

/** A live branch answered before it is written (wait: false). */
export function branchWritingReply(tag: string, mode: BranchMode, pauseMs: number): BranchReply {
  return { tag, status: 'writing', mode, pause_ms: tenths(pauseMs) };
}

/** What a finished branch measured (the engine's BranchResult carries it). */
export interface BranchStats {
  mode: BranchMode;
  /** How long the source VM was stopped. */
  pauseMs: number;
  /** Bytes the new snapshot needs on disk (a diff link: its diff; plus device state). */
  bytesWritten: number;
  /** Bytes QEMU sent over the migration channel. */
  transferredBytes: number;
  /** Precopy passes. */
  passes: number;
  /** Pages a diff link stores. */
  diffPages?: number;
  totalMs: number;
}

/** What the wire needs of a finished branch. */
export type FinishedBranch = StoredSnapshot & BranchStats;

export function branchReadyReply(r: FinishedBranch): BranchReply {
  return {
    ...snapshotSummary(r),
    status: 'ready',
    mode: r.mode,
    pause_ms: tenths(r.pauseMs),
    bytes_written: r.bytesWritten,
    transferred_bytes: r.transferredBytes,
    passes: r.passes,
    ...(r.diffPages !== undefined ? { diff_pages: r.diffPages } : {}),
    total_ms: Math.round(r.totalMs),
  };
}
