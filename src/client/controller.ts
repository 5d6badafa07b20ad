import { readFileSync } from 'node:fs';
import { Agent, request, type Dispatcher } from 'undici';
import { refuseTwoRecipes } from '../api/recipe-files.js';
import { packageVersion } from '../common/package-root.js';
import { StatePaths } from '../common/state-dir.js';
import type {
  BranchMode,
  BranchReply,
  ConsoleReply,
  CreateSandboxesRequest,
  CreateSnapshotRequest,
  EvalReply,
  EvalResult,
  ExecOptions,
  ExecReply,
  ExecResult,
  HeartbeatReply,
  Owner,
  OwnerRemovedReply,
  PendingSnapshot,
  PingReply,
  PoolReply,
  PullReply,
  SandboxInfo,
  SnapshotCreatedReply,
  SnapshotDetail,
  SnapshotSummary,
  VersionReply,
} from '../api/types.js';
import {
  createSnapshotRequest,
  evalResult,
  execRequest,
  execResult,
  type SnapshotRequestOptions,
} from '../api/wire.js';
import { ForkdError, type ErrorCode } from '../errors.js';
import { readRecipeUpload } from './recipe-upload.js';

export type { SandboxInfo, SnapshotDetail, SnapshotSummary };

export interface SandboxOptions {
  /** Who holds the sandboxes: a label, and a pid on the daemon's host whose exit reaps them. */
  owner?: Owner;
  /** A lease in seconds (1..86400), renewed by any request on the sandbox and by heartbeat(owner). */
  ttlS?: number;
}

export interface CreateSnapshotOptions extends SnapshotRequestOptions {
  /** A recipe directory of your project, sent to the daemon as its files (never as a path); not with `recipe`. */
  recipeDir?: string;
  /** The directory `recipeDir` must resolve inside, links followed (default: the working directory, your project). */
  root?: string;
}

export interface ControllerOptions {
  /** `unix:/path/to/forkd.sock` or `http://127.0.0.1:PORT`; default `$FORKD_ENDPOINT`, else the local daemon's. */
  endpoint?: string;
  /** Default `$FORKD_TOKEN`, else the local daemon's token file. */
  token?: string;
  /** Per-request timeout (ms; default 300 s). Snapshots and pulls, which may build or download for minutes, have none. */
  timeoutMs?: number;
  /** The engine version this client works with (ensureCompatible()); default this package's version. */
  clientVersion?: string;
}

function resolveEndpoint(options: ControllerOptions): { endpoint: string; token: string } {
  const env = process.env;
  let endpoint = options.endpoint ?? env.FORKD_ENDPOINT;
  let token = options.token ?? env.FORKD_TOKEN;
  if (!endpoint || !token) {
    const paths = new StatePaths();
    try {
      const info = JSON.parse(readFileSync(paths.file('daemon.json'), 'utf8')) as {
        endpoint: string;
        token_file: string;
      };
      endpoint ??= info.endpoint;
      token ??= readFileSync(info.token_file, 'utf8').trim();
    } catch {
      throw new ForkdError(
        'FORKD_ERR_UNREACHABLE',
        endpoint
          ? `no token for the forkd daemon at ${endpoint}: FORKD_TOKEN is unset`
          : 'no forkd daemon endpoint: FORKD_ENDPOINT is unset and no local daemon is running',
        {
          hint: 'start one with `forkd serve`, or set FORKD_ENDPOINT and FORKD_TOKEN',
        },
      );
    }
  }
  return { endpoint, token };
}

/**
 * undici's "no timeout": for requests that build (a first run compiles the guest kernel, 5-15
 * minutes on 2 cores, and a recipe's image) or download, which the caller waits out.
 */
const UNLIMITED = 0;

/** A typed client for the daemon's REST API, over a Unix socket or TCP (undici). */
export class Controller {
  private readonly dispatcher: Dispatcher;
  private readonly origin: string;
  readonly token: string;
  private readonly timeoutMs: number;
  readonly endpoint: string;
  readonly clientVersion: string;

  constructor(options: ControllerOptions = {}) {
    const { endpoint, token } = resolveEndpoint(options);
    this.endpoint = endpoint;
    this.token = token;
    this.timeoutMs = options.timeoutMs ?? 300_000;
    this.clientVersion = options.clientVersion ?? packageVersion;
    if (endpoint.startsWith('unix:')) {
      this.dispatcher = new Agent({ connect: { socketPath: endpoint.slice('unix:'.length) } });
      this.origin = 'http://forkd';
    } else {
      this.dispatcher = new Agent();
      this.origin = endpoint.replace(/\/$/, '');
    }
  }

  private async call(
    method: Dispatcher.HttpMethod,
    path: string,
    body?: unknown,
    raw?: Buffer,
    timeoutMs = this.timeoutMs,
  ): Promise<{ status: number; data: Buffer }> {
    let response: Dispatcher.ResponseData;
    try {
      response = await request(`${this.origin}${path}`, {
        method,
        dispatcher: this.dispatcher,
        headers: {
          authorization: `Bearer ${this.token}`,
          ...(body !== undefined
            ? { 'content-type': 'application/json' }
            : raw
              ? { 'content-type': 'application/octet-stream' }
              : {}),
        },
        body: raw ?? (body !== undefined ? JSON.stringify(body) : undefined),
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
      });
    } catch (err) {
      throw new ForkdError(
        'FORKD_ERR_UNREACHABLE',
        `cannot reach the forkd daemon at ${this.endpoint}: ${(err as Error).message}`,
        {
          hint: 'is `forkd serve` running? check FORKD_ENDPOINT',
          cause: err,
        },
      );
    }
    const data = Buffer.from(await response.body.arrayBuffer());
    if (response.statusCode >= 400) {
      let parsed: { error?: string; code?: ErrorCode; hint?: string } = {};
      try {
        parsed = JSON.parse(data.toString('utf8')) as typeof parsed;
      } catch {
        // not JSON: keep the status alone
      }
      throw new ForkdError(parsed.code ?? 'FORKD_ERR_INTERNAL', parsed.error ?? `HTTP ${response.statusCode}`, {
        status: response.statusCode,
        ...(parsed.hint ? { hint: parsed.hint } : {}),
      });
    }
    return { status: response.statusCode, data };
  }

  private async json<T>(method: Dispatcher.HttpMethod, path: string, body?: unknown, timeoutMs?: number): Promise<T> {
    const { data } = await this.call(method, path, body, undefined, timeoutMs);
    return (data.length ? JSON.parse(data.toString('utf8')) : undefined) as T;
  }

  health(): Promise<{ ok: boolean }> {
    return this.json('GET', '/healthz');
  }

  version(): Promise<VersionReply> {
    return this.json('GET', '/version');
  }

  /**
   * Fails unless the engine runs this client's version: a client and an engine of different
   * versions may disagree on the API, the snapshot format and the recipes. Call it once at setup.
   */
  async ensureCompatible(): Promise<void> {
    const engine = (await this.version()).version;
    if (engine === this.clientVersion) return;
    throw new ForkdError(
      'FORKD_ERR_INCOMPATIBLE',
      `version mismatch: this client is forkd-action ${this.clientVersion}, the engine at ${this.endpoint} is forkd-action ${engine}`,
      {
        hint:
          `use the engine that ships with this package (npx forkd serve; in a workflow, the Action's input ` +
          `"version: ${this.clientVersion}"), or upgrade one of them so both are the same version`,
      },
    );
  }

  async metrics(): Promise<string> {
    return (await this.call('GET', '/metrics')).data.toString('utf8');
  }

  /** Snapshots, and branches still being written (or failed) after a `wait: false` branch. */
  listSnapshots(): Promise<Array<SnapshotSummary | PendingSnapshot>> {
    return this.json('GET', '/v1/snapshots');
  }

  getSnapshot(tag: string): Promise<SnapshotDetail | PendingSnapshot> {
    return this.json('GET', `/v1/snapshots/${encodeURIComponent(tag)}`);
  }

  /** Installs a pack on the daemon's host: owner/name[@version] through its FORKD_HUB_URL, or a URL. */
  pull(ref: string, options: { tag?: string; force?: boolean } = {}): Promise<PullReply> {
    return this.json('POST', '/v1/snapshots/pull', { ref, ...options }, UNLIMITED);
  }

  /** Keeps `size` restored children of `tag` ready on the daemon, so forks skip the restore (0 removes the pool). */
  async setPool(tag: string, size: number): Promise<PoolReply> {
    return this.json('PUT', `/v1/snapshots/${encodeURIComponent(tag)}/pool`, { size });
  }

  /**
   * BRANCH: copies a running sandbox into snapshot `tag` (mode `live` by default); the sandbox
   * carries on. `wait: false` (live only) answers once the sandbox runs again.
   */
  branch(id: string, tag: string, options: { mode?: BranchMode; wait?: boolean } = {}): Promise<BranchReply> {
    return this.json('POST', `/v1/sandboxes/${encodeURIComponent(id)}/branch`, {
      tag,
      ...(options.mode ? { mode: options.mode } : {}),
      ...(options.wait === false ? { wait: false } : {}),
    });
  }

  snapshotInfo(tag: string): Promise<SnapshotDetail> {
    return this.json('GET', `/v1/snapshots/${encodeURIComponent(tag)}`);
  }

  /**
   * Boots, warms up and snapshots a VM on the daemon: from a packaged recipe by name (`recipe`), or
   * from a recipe directory of your project (`recipeDir`, sent as its files; see recipe-upload.ts).
   */
  async createSnapshot(tag: string, options: CreateSnapshotOptions = {}): Promise<SnapshotCreatedReply> {
    const { recipeDir, root, ...request } = options;
    refuseTwoRecipes(request.recipe, recipeDir !== undefined);
    const body: CreateSnapshotRequest = {
      ...createSnapshotRequest(tag, request),
      ...(recipeDir !== undefined ? { recipe_files: await readRecipeUpload(recipeDir, root) } : {}),
    };
    return this.json('POST', '/v1/snapshots', body, UNLIMITED);
  }

  /** A snapshot with diff links made from it is refused (409) unless `cascade` or `force`. */
  async deleteSnapshot(tag: string, options: { cascade?: boolean; force?: boolean } = {}): Promise<void> {
    const query = new URLSearchParams();
    if (options.cascade) query.set('cascade', 'true');
    if (options.force) query.set('force', 'true');
    await this.call('DELETE', `/v1/snapshots/${encodeURIComponent(tag)}${query.size ? `?${query}` : ''}`);
  }

  /**
   * Forks `n` sandboxes from a snapshot; each is a handle that `await using` cleans up. With an
   * `owner` (a label, and this process's pid on the daemon's host) and a lease (`ttlS`), the daemon
   * reaps them when the lease runs out or the owner's process is gone.
   */
  async createSandboxes(snapshot: string, n = 1, options: SandboxOptions = {}): Promise<Sandbox[]> {
    const body: CreateSandboxesRequest = {
      snapshot,
      n,
      ...(options.owner ? { owner: options.owner } : {}),
      ...(options.ttlS !== undefined ? { ttl_s: options.ttlS } : {}),
    };
    const infos = await this.json<SandboxInfo[]>('POST', '/v1/sandboxes', body);
    return infos.map((info) => new Sandbox(this, info));
  }

  async createSandbox(snapshot: string, options: SandboxOptions = {}): Promise<Sandbox> {
    const [sandbox] = await this.createSandboxes(snapshot, 1, options);
    return sandbox!;
  }

  /** Renews the lease of every sandbox `label` holds (404 when it holds none). */
  heartbeat(label: string): Promise<HeartbeatReply> {
    return this.json('POST', `/v1/owners/${encodeURIComponent(label)}/heartbeat`);
  }

  /** Kills every sandbox `label` holds. */
  deleteOwner(label: string): Promise<OwnerRemovedReply> {
    return this.json('DELETE', `/v1/owners/${encodeURIComponent(label)}`);
  }

  listSandboxes(): Promise<SandboxInfo[]> {
    return this.json('GET', '/v1/sandboxes');
  }

  getSandbox(id: string): Promise<SandboxInfo> {
    return this.json('GET', `/v1/sandboxes/${encodeURIComponent(id)}`);
  }

  async deleteSandbox(id: string): Promise<void> {
    await this.call('DELETE', `/v1/sandboxes/${encodeURIComponent(id)}`);
  }

  /** The last `lines` lines (default 50, at most 1000) of a sandbox's guest console. */
  async console(id: string, lines?: number): Promise<string> {
    const query = lines === undefined ? '' : `?lines=${lines}`;
    return (await this.json<ConsoleReply>('GET', `/v1/sandboxes/${encodeURIComponent(id)}/console${query}`)).text;
  }

  ping(id: string): Promise<PingReply> {
    return this.json('POST', `/v1/sandboxes/${encodeURIComponent(id)}/ping`);
  }

  async exec(id: string, command: string | string[], options: ExecOptions = {}): Promise<ExecResult> {
    return execResult(
      await this.json<ExecReply>('POST', `/v1/sandboxes/${encodeURIComponent(id)}/exec`, execRequest(command, options)),
    );
  }

  /** Runs code in the sandbox's warm interpreter (python-numpy, nodejs recipes); a raised error comes back as `ok: false`. */
  async eval(id: string, code: string, options: { timeoutMs?: number } = {}): Promise<EvalResult> {
    return evalResult(
      await this.json<EvalReply>('POST', `/v1/sandboxes/${encodeURIComponent(id)}/eval`, {
        code,
        ...(options.timeoutMs !== undefined ? { timeout_ms: options.timeoutMs } : {}),
      }),
    );
  }

  /** A guest file; one longer than `maxBytes` (default and largest 64 MiB) is refused with FORKD_ERR_LIMIT (413). */
  async readFile(id: string, path: string, options: { maxBytes?: number } = {}): Promise<Buffer> {
    const query = new URLSearchParams({ path });
    if (options.maxBytes !== undefined) query.set('max_bytes', String(options.maxBytes));
    return (await this.call('GET', `/v1/sandboxes/${encodeURIComponent(id)}/files?${query}`)).data;
  }

  async writeFile(id: string, path: string, data: string | Buffer, options: { mode?: number } = {}): Promise<void> {
    const mode = (options.mode ?? 0o644).toString(8);
    await this.call(
      'PUT',
      `/v1/sandboxes/${encodeURIComponent(id)}/files?path=${encodeURIComponent(path)}&mode=${mode}`,
      undefined,
      Buffer.from(data),
    );
  }

  async close(): Promise<void> {
    await this.dispatcher.close();
  }
}

/** One sandbox on the daemon. `await using sb = await controller.createSandbox(tag)` deletes it at scope exit. */
export class Sandbox implements AsyncDisposable {
  constructor(
    private readonly controller: Controller,
    readonly info: SandboxInfo,
  ) {}

  get id(): string {
    return this.info.id;
  }

  exec(command: string | string[], options?: ExecOptions): Promise<ExecResult> {
    return this.controller.exec(this.id, command, options);
  }

  eval(code: string, options?: { timeoutMs?: number }): Promise<EvalResult> {
    return this.controller.eval(this.id, code, options);
  }

  branch(tag: string, options?: { mode?: BranchMode; wait?: boolean }): Promise<BranchReply> {
    return this.controller.branch(this.id, tag, options);
  }

  console(lines?: number): Promise<string> {
    return this.controller.console(this.id, lines);
  }

  readFile(path: string, options?: { maxBytes?: number }): Promise<Buffer> {
    return this.controller.readFile(this.id, path, options);
  }

  writeFile(path: string, data: string | Buffer, options?: { mode?: number }): Promise<void> {
    return this.controller.writeFile(this.id, path, data, options);
  }

  kill(): Promise<void> {
    return this.controller.deleteSandbox(this.id);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.kill().catch((err: ForkdError) => {
      if (err.status !== 404) throw err; // already gone is fine
    });
  }
}
