/**
 * Every route of the REST API (v1): its path and query parameters, its request body and each
 * reply by status. The daemon's router takes its routes from here and validates requests with
 * these schemas; the OpenAPI document is generated from this table.
 */
import Type, { type TSchema } from 'typebox';
import * as S from './schemas.js';

/** A body that is not JSON: raw bytes or Prometheus text. */
export interface RawBody {
  raw: 'application/octet-stream' | 'text/plain';
  description: string;
}

export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'DELETE';

export interface BodyLimit {
  bytes: number;
  hint: string;
}

export interface RouteSpec {
  method: HttpMethod;
  path: string;
  operationId: string;
  summary: string;
  /** Open without a token (only GET /healthz). */
  open?: true;
  params?: TSchema;
  query?: TSchema;
  /** The JSON request body (refused above 1 MiB unless bodyLimit says more), or raw bytes the handler reads itself. */
  body?: TSchema | RawBody;
  /** A JSON body's own limit, and what to do about a body over it. */
  bodyLimit?: BodyLimit;
  /** Success replies by status: a JSON schema, a raw body, or null for no body. */
  replies: Record<number, TSchema | RawBody | null>;
  /** Error statuses beyond the ones every route can answer (400, 401, 500), each an ErrorReply. */
  errors?: readonly number[];
}

const route = <const R extends RouteSpec>(spec: R): R => spec;

const SANDBOX_ERRORS = [404, 410, 503] as const;
const GUEST_ERRORS = [404, 410, 422, 503] as const;

export const API = {
  health: route({
    method: 'GET',
    path: '/healthz',
    operationId: 'health',
    summary: 'Liveness; the only route open without a token (exactly /healthz)',
    open: true,
    replies: { 200: S.HealthReply },
  }),
  version: route({
    method: 'GET',
    path: '/version',
    operationId: 'version',
    summary: "The engine's package version and API version",
    replies: { 200: S.VersionReply },
  }),
  metrics: route({
    method: 'GET',
    path: '/metrics',
    operationId: 'metrics',
    summary: 'Prometheus metrics: sandboxes, forks and their latency, snapshots, pools, heavy operations, requests',
    replies: { 200: { raw: 'text/plain', description: 'Prometheus text format 0.0.4' } },
  }),
  openapi: route({
    method: 'GET',
    path: '/v1/openapi.json',
    operationId: 'openapi',
    summary: 'This OpenAPI 3.1 document',
    replies: { 200: Type.Object({ openapi: Type.Literal('3.1.0') }, { description: 'the OpenAPI document' }) },
  }),

  listSnapshots: route({
    method: 'GET',
    path: '/v1/snapshots',
    operationId: 'listSnapshots',
    summary: 'Snapshots, and branches still being written (or failed) after a wait: false branch',
    replies: { 200: S.SnapshotListReply },
  }),
  getSnapshot: route({
    method: 'GET',
    path: '/v1/snapshots/:tag',
    operationId: 'getSnapshot',
    summary: 'A snapshot with its memory, chain, live sandboxes and warm pool; or a pending branch',
    params: S.TagParams,
    replies: { 200: S.SnapshotGetReply },
    errors: [404, 409],
  }),
  createSnapshot: route({
    method: 'POST',
    path: '/v1/snapshots',
    operationId: 'createSnapshot',
    summary:
      "Boots, warms up and snapshots a VM: from a recipe by name, or from a recipe directory's files (recipe_files), never a path",
    body: S.CreateSnapshotRequest,
    bodyLimit: {
      bytes: S.RECIPE_UPLOAD_BODY_LIMIT,
      hint: `recipe_files holds at most ${S.MAX_RECIPE_FILES} files and ${S.MAX_RECIPE_UPLOAD_BYTES / 1024 / 1024} MiB`,
    },
    replies: { 201: S.SnapshotCreatedReply },
    errors: [404, 409, 413, 503],
  }),
  pull: route({
    method: 'POST',
    path: '/v1/snapshots/pull',
    operationId: 'pull',
    summary:
      'Installs a pack from the Hub or an https:// URL (plain http only on a daemon started with --allow-http-pull)',
    body: S.PullRequest,
    replies: { 201: S.PullReply },
    errors: [404, 409, 413, 503],
  }),
  setPool: route({
    method: 'PUT',
    path: '/v1/snapshots/:tag/pool',
    operationId: 'setPool',
    summary: 'Keeps size restored children ready so forks skip the restore (0 removes the pool)',
    params: S.TagParams,
    body: S.PoolRequest,
    replies: { 200: S.PoolReply },
    errors: [404, 409, 413, 503],
  }),
  deleteSnapshot: route({
    method: 'DELETE',
    path: '/v1/snapshots/:tag',
    operationId: 'deleteSnapshot',
    summary: "Removes a snapshot; a chain's parent with dependents is refused (409) unless cascade or force",
    params: S.TagParams,
    query: S.DeleteSnapshotQuery,
    replies: { 204: null },
    errors: [404, 409, 503],
  }),

  createSandboxes: route({
    method: 'POST',
    path: '/v1/sandboxes',
    operationId: 'createSandboxes',
    summary: 'Forks n sandboxes from a snapshot, optionally for an owner and with a lease',
    body: S.CreateSandboxesRequest,
    replies: { 201: S.SandboxListReply },
    errors: [404, 409, 413, 503],
  }),
  listSandboxes: route({
    method: 'GET',
    path: '/v1/sandboxes',
    operationId: 'listSandboxes',
    summary: 'Live sandboxes',
    replies: { 200: S.SandboxListReply },
  }),
  getSandbox: route({
    method: 'GET',
    path: '/v1/sandboxes/:id',
    operationId: 'getSandbox',
    summary: 'One sandbox',
    params: S.SandboxParams,
    replies: { 200: S.SandboxInfo },
    errors: [404],
  }),
  deleteSandbox: route({
    method: 'DELETE',
    path: '/v1/sandboxes/:id',
    operationId: 'deleteSandbox',
    summary: 'Kills a sandbox',
    params: S.SandboxParams,
    replies: { 204: null },
    errors: [404],
  }),
  console: route({
    method: 'GET',
    path: '/v1/sandboxes/:id/console',
    operationId: 'console',
    summary: 'The end of the guest console (kernel messages, /dev/console writes)',
    params: S.SandboxParams,
    query: S.ConsoleQuery,
    replies: { 200: S.ConsoleReply },
    errors: [404],
  }),
  ping: route({
    method: 'POST',
    path: '/v1/sandboxes/:id/ping',
    operationId: 'ping',
    summary: "Asks the sandbox's guest agent for a sign of life",
    params: S.SandboxParams,
    body: S.EmptyRequest,
    replies: { 200: S.PingReply },
    errors: [...SANDBOX_ERRORS, 413],
  }),
  exec: route({
    method: 'POST',
    path: '/v1/sandboxes/:id/exec',
    operationId: 'exec',
    summary: 'Runs a command (argv, or a shell string) and answers with its exit code and output',
    params: S.SandboxParams,
    body: S.ExecRequest,
    replies: { 200: S.ExecReply },
    errors: [...GUEST_ERRORS, 413],
  }),
  eval: route({
    method: 'POST',
    path: '/v1/sandboxes/:id/eval',
    operationId: 'eval',
    summary: "Runs code in the sandbox's warm interpreter; a raised error is ok: false (still 200)",
    params: S.SandboxParams,
    body: S.EvalRequest,
    replies: { 200: S.EvalReply },
    errors: [...GUEST_ERRORS, 413, 504],
  }),
  branch: route({
    method: 'POST',
    path: '/v1/sandboxes/:id/branch',
    operationId: 'branch',
    summary: 'Copies a running sandbox into a new snapshot; the sandbox carries on',
    params: S.SandboxParams,
    body: S.BranchRequest,
    replies: { 201: S.BranchReply, 202: S.BranchReply },
    errors: [...SANDBOX_ERRORS, 409, 413],
  }),
  readFile: route({
    method: 'GET',
    path: '/v1/sandboxes/:id/files',
    operationId: 'readFile',
    summary: 'A guest file, raw (a file longer than max_bytes is refused with 413 FORKD_ERR_LIMIT)',
    params: S.SandboxParams,
    query: S.ReadFileQuery,
    replies: { 200: { raw: 'application/octet-stream', description: 'the file' } },
    errors: [...GUEST_ERRORS, 413],
  }),
  writeFile: route({
    method: 'PUT',
    path: '/v1/sandboxes/:id/files',
    operationId: 'writeFile',
    summary: 'Writes a guest file from the raw body (up to 64 MiB)',
    params: S.SandboxParams,
    query: S.WriteFileQuery,
    body: { raw: 'application/octet-stream', description: 'the file, up to 64 MiB' },
    replies: { 204: null },
    errors: [...GUEST_ERRORS, 413],
  }),

  heartbeat: route({
    method: 'POST',
    path: '/v1/owners/:label/heartbeat',
    operationId: 'heartbeat',
    summary: 'Renews the lease of every sandbox the owner holds; an owner with none is 404 (fork with owner first)',
    params: S.OwnerParams,
    body: S.EmptyRequest,
    replies: { 200: S.HeartbeatReply },
    errors: [404, 413],
  }),
  deleteOwner: route({
    method: 'DELETE',
    path: '/v1/owners/:label',
    operationId: 'deleteOwner',
    summary: 'Kills every sandbox the owner holds',
    params: S.OwnerParams,
    replies: { 200: S.OwnerRemovedReply },
  }),
} as const;

export type ApiRoute = (typeof API)[keyof typeof API];

/** The error statuses of a route: its own, and 400, 401 and 500, which any can answer (even /healthz?x needs the token). */
export function errorStatuses(spec: RouteSpec): number[] {
  return [...new Set([400, 401, 500, ...(spec.errors ?? [])])].sort((a, b) => a - b);
}

export function isRawBody(body: TSchema | RawBody | null | undefined): body is RawBody {
  return typeof body === 'object' && body !== null && 'raw' in body;
}
