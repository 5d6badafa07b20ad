import { writeJsonAtomic } from '../common/atomic-file.js';
import { existsSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, isIP } from 'node:net';
import { StatePaths } from '../common/state-dir.js';
import { openEngine } from '../hub/hub.js';
import { ForkdError, errorMessage } from '../errors.js';
import { AuditLog } from './audit.js';
import { authFailure, isHealthz, loadOrCreateToken } from './auth.js';
import type { DaemonContext } from './context.js';
import { httpStatus } from './http-status.js';
import { Metrics } from './metrics.js';
import { adoptLeftovers } from './adoption.js';
import { lockStateDir } from './daemon-lock.js';
import { Ledger } from './ledger.js';
import { Reaper } from './reaper.js';
import type { Reply, Router } from './router.js';
import { apiRouter } from './routes/index.js';
import { OperationSlots } from './slots.js';
import { BranchTracker } from './branches.js';
import { watchExitWith, type ExitWith } from './exit-with.js';

export interface DaemonOptions {
  /** A Unix socket path, or HOST:PORT on loopback. Default: `<state>/forkd.sock`. */
  listen?: string;
  /** Bearer token file; created (0600) in the state dir when not given. */
  tokenFile?: string;
  paths?: StatePaths;
  /** Heavy operations (snapshots, forks) in flight at once; more get 503. */
  maxHeavy?: number;
  /** POST /v1/snapshots/pull may fetch plain http:// packs (`--allow-http-pull`); default https:// only. */
  allowHttpPull?: boolean;
  /**
   * POST /v1/snapshots takes a recipe as its files (`--allow-recipe-upload`). Off by default: a
   * recipe's build runs on this host (in a chroot, as root where the build runs as root), so only a
   * daemon whose token the uploader alone holds (a test run's own) should take them.
   */
  allowRecipeUpload?: boolean;
  /**
   * Every VM gets a parent-death signal, so a daemon killed outright (SIGKILL, OOM) takes its VMs
   * with it; a later daemon then has none of them to adopt. For a daemon that serves one test run.
   */
  vmsDieWithDaemon?: boolean;
  /**
   * Stop (as on SIGTERM) once this process has ended (`--exit-with PID`): the test runner that
   * started the daemon. Implies `vmsDieWithDaemon`. A pid that is not a running process is refused.
   */
  exitWith?: number;
}

/** What clients read to find a running daemon: `<state>/daemon.json`. */
export interface DaemonEndpoint {
  endpoint: string;
  pid: number;
  token_file: string;
  started: string;
}

type Listen = { kind: 'unix'; path: string } | { kind: 'tcp'; host: string; port: number };

export function parseListen(listen: string): Listen {
  const tcp = /^(\[[^\]]+\]|[^:/]+):(\d{1,5})$/.exec(listen);
  if (!tcp) return { kind: 'unix', path: listen };
  const host = tcp[1]!.replace(/^\[|\]$/g, '');
  const port = Number(tcp[2]);
  if (port > 65535) throw new ForkdError('FORKD_ERR_BAD_INPUT', `port ${port} is out of range`);
  return { kind: 'tcp', host, port };
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));
}

async function socketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

function send(res: ServerResponse, reply: Reply): void {
  if ('body' in reply) {
    res.writeHead(reply.status, { 'content-type': reply.contentType, 'content-length': Buffer.byteLength(reply.body) });
    res.end(reply.body);
  } else if (reply.json === undefined) {
    res.writeHead(reply.status);
    res.end();
  } else {
    const text = JSON.stringify(reply.json);
    res.writeHead(reply.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }
}

/** What a running daemon holds, and lets go of when it closes. */
interface DaemonParts {
  server: Server;
  ctx: DaemonContext;
  reaper: Reaper;
  audit: AuditLog;
  paths: StatePaths;
  socketPath: string | undefined;
  unlock: () => void;
  exitWith: ExitWith | undefined;
}

/** The engine as a daemon: REST over a Unix socket or loopback TCP, bearer auth, audit log, metrics. */
export class Daemon implements AsyncDisposable {
  private closing: Promise<void> | undefined;
  private stoppedBecause!: (reason: string) => void;
  /** Resolves, with the reason, once the daemon has stopped (closed, or its exit-with process ended). */
  readonly stopped = new Promise<string>((resolve) => (this.stoppedBecause = resolve));

  private constructor(
    readonly endpoint: string,
    readonly token: string,
    readonly tokenFile: string,
    private readonly parts: DaemonParts,
  ) {}

  static async start(options: DaemonOptions = {}): Promise<Daemon> {
    const paths = options.paths ?? new StatePaths();
    const listen = parseListen(options.listen ?? paths.file('forkd.sock'));
    if (listen.kind === 'tcp' && !isLoopback(listen.host) && !options.tokenFile) {
      throw new ForkdError(
        'FORKD_ERR_BAD_INPUT',
        `refusing to listen on non-loopback ${listen.host} without --token-file`,
        {
          hint: 'listen on 127.0.0.1 or a Unix socket, or give a token file you manage with --token-file',
        },
      );
    }
    const exitWith = options.exitWith === undefined ? undefined : watchExitWith(options.exitWith);
    let unlock: (() => void) | undefined;
    try {
      unlock = lockStateDir(paths);
      const daemon = await Daemon.serve(options, paths, listen, unlock, exitWith);
      void exitWith?.gone.then(() => daemon.close(`exit-with process ${exitWith.pid} exited`));
      return daemon;
    } catch (err) {
      unlock?.();
      exitWith?.stop();
      throw err;
    }
  }

  private static async serve(
    options: DaemonOptions,
    paths: StatePaths,
    listen: Listen,
    unlock: () => void,
    exitWith: ExitWith | undefined,
  ) {
    const tokenFile = options.tokenFile ?? paths.file('token');
    const token = loadOrCreateToken(tokenFile);
    if (listen.kind === 'unix' && existsSync(listen.path)) {
      if (await socketAnswers(listen.path)) {
        throw new ForkdError('FORKD_ERR_CONFLICT', `a daemon is already listening on ${listen.path}`, {
          hint: 'stop it first, or use --listen',
        });
      }
      rmSync(listen.path, { force: true }); // left by a daemon that died
    }
    const ledger = new Ledger(paths.file('ledger'), paths.run());
    // Unless they die with it, sandboxes outlive the daemon process, so a restarted daemon adopts them (below).
    const dieWithParent = options.vmsDieWithDaemon === true || exitWith !== undefined;
    const ctx: DaemonContext = {
      ...openEngine(paths, { launch: { dieWithParent, ledger } }),
      ledger,
      slots: new OperationSlots(options.maxHeavy ?? 4),
      metrics: new Metrics(),
      branches: new BranchTracker(),
      allowHttpPull: options.allowHttpPull ?? false,
      allowRecipeUpload: options.allowRecipeUpload ?? false,
    };
    const audit = new AuditLog(paths.file('audit.log'));
    const reaper = new Reaper(ledger, audit, ctx.metrics);
    await adoptLeftovers(ledger, ctx.engine, audit);
    const router = apiRouter(ctx);
    const server = createServer((req, res) => void Daemon.handle(req, res, router, token, audit, ctx.metrics));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      if (listen.kind === 'unix') server.listen(listen.path, resolve);
      else server.listen(listen.port, listen.host, resolve);
    });
    let endpoint: string;
    if (listen.kind === 'unix') {
      chmodSync(listen.path, 0o600);
      endpoint = `unix:${listen.path}`;
    } else {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : listen.port;
      endpoint = `http://${listen.host.includes(':') ? `[${listen.host}]` : listen.host}:${port}`;
    }
    const daemon = new Daemon(endpoint, token, tokenFile, {
      server,
      ctx,
      reaper,
      audit,
      paths,
      socketPath: listen.kind === 'unix' ? listen.path : undefined,
      unlock,
      exitWith,
    });
    const info: DaemonEndpoint = {
      endpoint,
      pid: process.pid,
      token_file: tokenFile,
      started: new Date().toISOString(),
    };
    const file = paths.file('daemon.json');
    writeJsonAtomic(file, info, { mode: 0o600, pretty: true });
    writeFileSync(paths.file('forkd.pid'), `${process.pid}\n`);
    return daemon;
  }

  private static async handle(
    req: IncomingMessage,
    res: ServerResponse,
    router: Router,
    token: string,
    audit: AuditLog,
    metrics: Metrics,
  ) {
    const started = performance.now();
    const method = req.method ?? 'GET';
    let path = (req.url ?? '/').split('?')[0]!;
    let status = 500;
    try {
      if (!isHealthz(req.url)) {
        const failure = authFailure(req.headers.authorization, token);
        if (failure)
          throw new ForkdError('FORKD_ERR_UNAUTHORIZED', failure, {
            hint: 'send Authorization: Bearer <token from the daemon token file>',
          });
      }
      const url = new URL(req.url ?? '/', 'http://forkd');
      path = url.pathname;
      let match;
      try {
        match = router.match(method, path);
      } catch {
        throw new ForkdError('FORKD_ERR_BAD_INPUT', `malformed path ${path}`);
      }
      if (!match)
        throw new ForkdError('FORKD_ERR_NOT_FOUND', `no route for ${method} ${path}`, {
          hint: 'the API lives under /v1',
        });
      if (match === 'method')
        throw new ForkdError('FORKD_ERR_BAD_INPUT', `${method} is not allowed on ${path}`, {
          status: 405,
          hint: 'GET /v1/openapi.json lists the methods of each path',
        });
      const reply = await router.dispatch(match, req, url.searchParams);
      status = reply.status;
      send(res, reply);
    } catch (err) {
      const e = err instanceof ForkdError ? err : new ForkdError('FORKD_ERR_INTERNAL', errorMessage(err));
      status = e.status ?? httpStatus(e.code);
      if (!res.headersSent)
        send(res, { status, json: { error: e.message, code: e.code, ...(e.hint ? { hint: e.hint } : {}) } });
      else res.destroy();
      if (status >= 400 && req.readable) req.resume(); // drain what we did not read
    } finally {
      metrics.requestsTotal++;
      audit.write({ method, path, status, latency_ms: Math.round((performance.now() - started) * 10) / 10 });
    }
  }

  get ledger(): Ledger {
    return this.parts.ctx.ledger;
  }

  /** `await using daemon = await Daemon.start()` closes it at scope exit. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /**
   * Stops accepting, kills every sandbox and pool VM, removes the socket and endpoint files. The
   * audit log says why it stopped (`reason`: the signal, or the end of the exit-with process).
   */
  close(reason = 'closed by the program that started it'): Promise<void> {
    this.closing ??= (async () => {
      const { server, ctx, reaper, audit, paths, socketPath, unlock, exitWith } = this.parts;
      audit.event({ event: 'stop', reason });
      exitWith?.stop();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      reaper.close();
      await ctx.engine.close(); // first: forks under way kill their children, the others are in the ledger
      await Promise.all(ctx.ledger.drain().map((s) => s.vm.kill()));
      await ctx.branches.settled(); // their sources are gone: they fail fast and clean up
      await closed;
      if (socketPath) rmSync(socketPath, { force: true });
      rmSync(paths.file('daemon.json'), { force: true });
      rmSync(paths.file('forkd.pid'), { force: true });
      unlock();
      this.stoppedBecause(reason);
    })();
    return this.closing;
  }
}
