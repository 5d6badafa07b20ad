/**
 * A test worker's side of a run, for any runner: fork children of the run's snapshots under the
 * run's owner and lease, as sandboxes or Postgres connections, with checkpoints and console tails.
 */
import { randomBytes } from 'node:crypto';
import { Controller, ForkdError, errorMessage, type Sandbox } from 'forkd-action';
import { LEASE_S, runCheckpoints, runOwner, type ForkdConnection } from './options.js';

/** How a test reaches its own Postgres (the postgres recipe's user, password and database). */
export interface PostgresConnection {
  url: string;
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
  /** The sandbox it runs in. */
  sandbox: ForkdSandbox;
}

/** A snapshot made from a running sandbox: fork more children from it. */
export interface Checkpoint {
  tag: string;
  pauseMs: number;
}

/** A forked child for one test (or file, or worker): commands, files, ports and checkpoints. */
export interface ForkdSandbox {
  id: string;
  ports: Record<string, number>;
  exec: Sandbox['exec'];
  readFile: Sandbox['readFile'];
  writeFile: Sandbox['writeFile'];
  /** The end of its guest console (a failing test gets it attached anyway). */
  console: Sandbox['console'];
  /** BRANCH this sandbox into a snapshot (live by default); it carries on running. */
  checkpoint(options?: { mode?: 'full' | 'diff' | 'live' }): Promise<Checkpoint>;
}

/** A forked child and how to let it go (kill it; never throws). */
export interface Child {
  sandbox: Sandbox;
  release(): Promise<void>;
}

/** Is the engine on this host? Then this process's end releases the sandboxes it forked. */
function sameHost(endpoint: string): boolean {
  if (endpoint.startsWith('unix:')) return true;
  const host = new URL(endpoint).hostname;
  return host === 'localhost' || host === '[::1]' || host.startsWith('127.');
}

export const CONSOLE_TAIL_LINES = 30;

/** The run as one test worker sees it: one client for the engine, children owned by this process. */
export class RunWorker {
  private controller: Controller | undefined;

  constructor(readonly connection: ForkdConnection) {}

  get client(): Controller {
    this.controller ??= new Controller({ endpoint: this.connection.endpoint, token: this.connection.token });
    return this.controller;
  }

  /** A configured snapshot name -> its tag on the engine (the Action's, when it stands for it); any other tag as it is. */
  tagOf(name: string): string {
    return this.connection.tags[name] ?? name;
  }

  /** The run's owner, with this worker's pid when the engine can see it: a worker that dies releases its sandboxes. */
  private owner(): { label: string; pid?: number } {
    const { runner, runId, endpoint } = this.connection;
    return { label: runOwner(runner, runId), ...(sameHost(endpoint) ? { pid: process.pid } : {}) };
  }

  /** Forks a child of `tag` for the `what` fixture. Errors say which snapshot and how to fix it. */
  async fork(tag: string | null, what: string, configHint: string): Promise<Child> {
    if (!tag) {
      throw new ForkdError('FORKD_ERR_BAD_INPUT', `no snapshot is configured for the ${what} fixture`, {
        hint: `name one in forkd({ snapshots, ${what}: 'NAME' })${what === 'postgres' ? ", e.g. { pg: { recipe: 'postgres' } }" : ''}`,
      });
    }
    const sandbox = await this.client
      .createSandbox(tag, { owner: this.owner(), ttlS: LEASE_S })
      .catch((err: unknown) => {
        const e = err instanceof ForkdError ? err : new ForkdError('FORKD_ERR_INTERNAL', String(err));
        throw new ForkdError(e.code, `forking ${tag} for the ${what} fixture failed: ${e.message}`, {
          hint: e.hint ?? configHint,
          cause: err,
        });
      });
    return { sandbox, release: () => sandbox.kill().catch(() => {}) };
  }

  /** What a test holds of a child: commands, files, ports, console, checkpoints (tagged with the run's id). */
  wrap(sandbox: Sandbox): ForkdSandbox {
    const checkpoints = runCheckpoints(this.connection.runner, this.connection.runId);
    return {
      id: sandbox.id,
      ports: sandbox.info.ports,
      exec: (command, options) => sandbox.exec(command, options),
      readFile: (path) => sandbox.readFile(path),
      writeFile: (path, data, options) => sandbox.writeFile(path, data, options),
      console: (lines) => sandbox.console(lines),
      async checkpoint(options = {}) {
        const tag = `${checkpoints}${randomBytes(6).toString('hex')}`;
        const r = await sandbox.branch(tag, { mode: options.mode ?? 'live' });
        return { tag, pauseMs: r.pause_ms };
      },
    };
  }

  postgres(sandbox: Sandbox): PostgresConnection {
    const port = sandbox.info.ports['5432'];
    if (!port) {
      throw new ForkdError('FORKD_ERR_BAD_INPUT', `sandbox ${sandbox.id} exposes no port 5432`, {
        hint: "the postgres fixture needs a snapshot of the postgres recipe: { pg: { recipe: 'postgres' } }",
      });
    }
    const [user, password, database, host] = ['forkd', 'forkd', 'forkd', '127.0.0.1'];
    return {
      url: `postgres://${user}:${password}@${host}:${port}/${database}`,
      host,
      port,
      user,
      password,
      database,
      sandbox: this.wrap(sandbox),
    };
  }

  /**
   * Runs `setup` in a fresh child of the postgres snapshot (migrations, seed data) and checkpoints
   * it (full by default: the setup is done, so the pause does not matter, and nothing runs on
   * during the copy); the child is killed after.
   */
  async seedPostgres(
    setup: (postgres: PostgresConnection) => Promise<void>,
    mode: 'full' | 'diff' | 'live' = 'full',
    configHint: string,
  ): Promise<Checkpoint> {
    const { sandbox, release } = await this.fork(this.connection.postgres, 'postgres', configHint);
    try {
      const postgres = this.postgres(sandbox);
      await setup(postgres);
      return await postgres.sandbox.checkpoint({ mode });
    } finally {
      await release();
    }
  }

  /** Deletes a checkpoint snapshot (and the diff links made from it). */
  async removeCheckpoint(checkpoint: Checkpoint): Promise<void> {
    await this.client.deleteSnapshot(checkpoint.tag, { cascade: true });
  }

  async close(): Promise<void> {
    await this.controller?.close();
    this.controller = undefined;
  }
}

/** The title and text of a child's console tail, for a failing test's report. */
export async function consoleTail(sandbox: Sandbox): Promise<{ title: string; text: string }> {
  const text = await sandbox
    .console(CONSOLE_TAIL_LINES)
    .then((t) => t || '(the guest printed nothing)')
    .catch((err: unknown) => `(could not read it: ${errorMessage(err)})`);
  return { title: `forkd sandbox ${sandbox.id} (snapshot ${sandbox.info.snapshot}), console tail`, text };
}
