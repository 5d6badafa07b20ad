/**
 * The Playwright example's todo app run on the host, for the baselines of bench/playwright.ts: host
 * Node runs examples/playwright-app/todo-app/server.mjs (its `pg` is this repository's devDependency)
 * against a host PostgreSQL 15 cluster of its own, made as the recipe's build.sh makes the guest's:
 * a `todo` role owning a `todo` database that holds schema.sql (the table and its seed).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { once } from 'node:events';
import pg from 'pg';
import { onProcessExit } from '../../src/engine/reaper.js';
import { HostCluster, PG_BIN, freePort } from '../host-postgres.js';

const APP_DIR = join(import.meta.dirname, '../../examples/playwright-app/todo-app');
const SCHEMA = readFileSync(join(APP_DIR, 'schema.sql'), 'utf8');
const READY_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 5_000;

/** schema.sql's INSERT statements: the seed that a reset puts back. */
const SEED_INSERTS = SCHEMA.split(/;\s*$/m)
  .map((statement) => statement.trim())
  .filter((statement) => /^INSERT\s/i.test(statement));
const SEEDED_TABLES = [...new Set(SEED_INSERTS.map((insert) => /^INSERT\s+INTO\s+([\w."]+)/i.exec(insert)![1]!))];

/** What a command run by `sandbox.exec` gives back (the fields of the guest's ExecResult the specs read). */
export interface HostExecResult {
  exitCode: number;
  stdout: Buffer;
  stderr: Buffer;
}

/** The host app as the specs see it: the `app` fixture's fields, the sandbox a host shell. */
export interface HostAppFixture {
  url: string;
  port: number;
  ports: Record<string, number>;
  sandbox: { exec(command: string): Promise<HostExecResult> };
}

export class HostTodoApp {
  private constructor(
    private readonly cluster: HostCluster,
    private readonly server: ChildProcess,
    private readonly unregister: () => void,
    /** a superuser connection to the app's database, for resets */
    private readonly admin: pg.Client,
    readonly port: number,
  ) {}

  /** A new cluster (initdb, start, role, database, schema.sql) and the app serving it on a free port. */
  static async start(): Promise<HostTodoApp> {
    const cluster = new HostCluster(await freePort()).init();
    const superuser = { host: cluster.dir, port: cluster.port, user: 'forkd' };
    const admin = new pg.Client({ ...superuser, database: 'todo' });
    try {
      const setup = new pg.Client({ ...superuser, database: 'postgres' });
      await setup.connect();
      try {
        await setup.query(`CREATE ROLE todo LOGIN PASSWORD 'todo'`);
        await setup.query('CREATE DATABASE todo OWNER todo');
      } finally {
        await setup.end();
      }
      await admin.connect();
      await admin.query(SCHEMA);
    } catch (err) {
      await admin.end().catch(() => {});
      cluster.remove();
      throw err;
    }

    const port = await freePort();
    const log = openSync(join(cluster.dir, 'app.log'), 'a');
    const server = spawn(process.execPath, [join(APP_DIR, 'server.mjs')], {
      env: { ...process.env, ...pgEnv(cluster), PGUSER: 'todo', PGDATABASE: 'todo', PORT: String(port) },
      stdio: ['ignore', log, log],
    });
    closeSync(log);
    const app = new HostTodoApp(
      cluster,
      server,
      onProcessExit(() => server.kill('SIGKILL')),
      admin,
      port,
    );
    try {
      await app.ready();
    } catch (err) {
      await app.stop();
      throw err;
    }
    return app;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  fixture(): HostAppFixture {
    const env = { ...process.env, ...pgEnv(this.cluster), PATH: `${PG_BIN}:${process.env.PATH}` };
    return {
      url: this.url,
      port: this.port,
      ports: { '3000': this.port, '5432': this.cluster.port },
      sandbox: { exec: (command) => shell(command, env) },
    };
  }

  /** Back to the seed, in place: the app keeps its pooled connections (sequences restart, as ids are asserted). */
  async reset(): Promise<void> {
    await this.admin.query(`TRUNCATE ${SEEDED_TABLES.join(', ')} RESTART IDENTITY; ${SEED_INSERTS.join('; ')}`);
  }

  async stop(): Promise<void> {
    await this.admin.end().catch(() => {});
    if (this.server.exitCode === null && this.server.signalCode === null) {
      const exited = once(this.server, 'exit');
      this.server.kill('SIGTERM');
      const stubborn = setTimeout(() => this.server.kill('SIGKILL'), STOP_TIMEOUT_MS);
      await exited;
      clearTimeout(stubborn);
    }
    this.unregister();
    this.cluster.remove();
  }

  /** Waits for GET /health to answer 200 (the app's pool has reached the database). */
  private async ready(): Promise<void> {
    const deadline = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      if (this.server.exitCode !== null || this.server.signalCode !== null) throw this.failure('exited');
      const ok = await fetch(`${this.url}/health`).then(
        (response) => response.ok,
        () => false,
      );
      if (ok) return;
      if (Date.now() > deadline) throw this.failure(`did not answer /health in ${READY_TIMEOUT_MS} ms`);
      await sleep(50);
    }
  }

  private failure(what: string): Error {
    const log = readFileSync(join(this.cluster.dir, 'app.log'), 'utf8');
    return new Error(`the host todo app on port ${this.port} ${what}; its log:\n${log}`);
  }
}

/** Where a client reaches the cluster: its Unix socket, as the guest's app does. */
function pgEnv(cluster: HostCluster): Record<string, string> {
  return { PGHOST: cluster.dir, PGPORT: String(cluster.port) };
}

/** Runs a command in the host's shell: the stand-in for `app.sandbox.exec` in a guest. */
function shell(command: string, env: NodeJS.ProcessEnv): Promise<HostExecResult> {
  return new Promise((resolve, reject) => {
    execFile('sh', ['-c', command], { env, encoding: 'buffer' }, (err, stdout, stderr) => {
      const exitCode = err ? err.code : 0;
      if (typeof exitCode !== 'number') reject(err ?? new Error(`${command}: no exit status`));
      else resolve({ exitCode, stdout, stderr });
    });
  });
}
