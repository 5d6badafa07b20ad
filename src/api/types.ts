/**
 * The API's types: the wire shapes (snake_case) are the schemas' Static<> types; the in-process
 * shapes (camelCase) are what the engine and the client hand their callers. src/api is the bottom
 * layer: the engine, the daemon and the client import from it, it imports from none of them.
 */
import type { Static } from 'typebox';
import type * as S from './schemas.js';

export type ErrorReply = Static<typeof S.ErrorReply>;
export type VersionReply = Static<typeof S.VersionReply>;
export type SnapshotSummary = Static<typeof S.SnapshotSummary>;
export type PoolState = Static<typeof S.PoolState>;
export type SnapshotDetail = Static<typeof S.SnapshotDetail>;
export type PendingSnapshot = Static<typeof S.PendingSnapshot>;
export type RecipeFiles = Static<typeof S.RecipeFiles>;
export type CreateSnapshotRequest = Static<typeof S.CreateSnapshotRequest>;
export type SnapshotCreatedReply = Static<typeof S.SnapshotCreatedReply>;
export type PullRequest = Static<typeof S.PullRequest>;
export type PullReply = Static<typeof S.PullReply>;
export type PoolRequest = Static<typeof S.PoolRequest>;
export type PoolReply = Static<typeof S.PoolReply>;
export type Owner = Static<typeof S.Owner>;
export type Lease = Static<typeof S.Lease>;
export type SandboxInfo = Static<typeof S.SandboxInfo>;
export type CreateSandboxesRequest = Static<typeof S.CreateSandboxesRequest>;
export type ConsoleReply = Static<typeof S.ConsoleReply>;
export type PingReply = Static<typeof S.PingReply>;
export type ExecRequest = Static<typeof S.ExecRequest>;
export type ExecReply = Static<typeof S.ExecReply>;
export type EvalRequest = Static<typeof S.EvalRequest>;
export type EvalReply = Static<typeof S.EvalReply>;
export type BranchRequest = Static<typeof S.BranchRequest>;
export type BranchReply = Static<typeof S.BranchReply>;
export type HeartbeatReply = Static<typeof S.HeartbeatReply>;
export type OwnerRemovedReply = Static<typeof S.OwnerRemovedReply>;

export type BranchMode = (typeof S.BRANCH_MODES)[number];

export interface ExecOptions {
  env?: Record<string, string>;
  cwd?: string;
  stdin?: string | Buffer;
  /** Kill the command's process group after this long (the agent enforces it). */
  timeoutMs?: number;
  /** Cap per output stream; the rest is dropped and `*Truncated` is set. Default 1 MiB, max 4 MiB. */
  maxOutputBytes?: number;
}

export interface ExecResult {
  /** The exit status, or 128 + signal number when a signal killed it. */
  exitCode: number;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  stdout: Buffer;
  stderr: Buffer;
  stdoutTruncated: boolean;
  stderrTruncated: boolean;
  durationMs: number;
}

/** What a guest's warm interpreter answered: a value, or the error it raised with the guest's traceback/stack. */
export type EvalResult =
  | {
      ok: true;
      /** The value as JSON, when it has a JSON form (numpy arrays become lists); else null. */
      value: unknown;
      /** The interpreter's own rendering: Python's repr(), Node's util.inspect(); null for statements. */
      repr: string | null;
      /** What the code printed. */
      output: string;
      durationMs: number;
    }
  | {
      ok: false;
      error: { type: string; message: string; stack: string };
      output: string;
      durationMs: number;
    };
