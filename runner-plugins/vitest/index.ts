/**
 * forkd-action/vitest: fork-per-test sandboxes and Postgres for Vitest.
 *
 *   // vitest.config.ts
 *   plugins: [forkd({ snapshots: { pg: { recipe: 'postgres' } } })]
 *   // a test file
 *   import { test } from 'forkd-action/vitest';
 *   test('isolated', async ({ postgres }) => { new pg.Client(postgres.url) ... });
 */
import { randomBytes } from 'node:crypto';
import { Controller, ForkdError, errorMessage, type Sandbox } from 'forkd-action';
import { afterAll, beforeAll, inject, onTestFinished, test as base, type TestContext } from 'vitest';
import { LEASE_S, runCheckpoints, runOwner, type ForkdConnection } from './options.js';

// vitest.config.ts imports the plugin from 'forkd-action/vitest/plugin': this module needs a running Vitest
export type { ForkdVitestOptions, ForkdSnapshotSpec, ForkdConnection } from './options.js';

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

/** A snapshot made from a running sandbox: fork more children from it with forkFrom(). */
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

let controller: Controller | undefined;

function connection(): ForkdConnection {
  const c = inject('forkd');
  if (!c) {
    throw new ForkdError('FORKD_ERR_BAD_INPUT', 'forkd is not set up for this Vitest run', {
      hint: "add plugins: [forkd({ snapshots: { ... } })] from 'forkd-action/vitest' to vitest.config.ts",
    });
  }
  return c;
}

function client(): Controller {
  const c = connection();
  controller ??= new Controller({ endpoint: c.endpoint, token: c.token });
  return controller;
}

function wrap(sandbox: Sandbox): ForkdSandbox {
  return {
    id: sandbox.id,
    ports: sandbox.info.ports,
    exec: (command, options) => sandbox.exec(command, options),
    readFile: (path) => sandbox.readFile(path),
    writeFile: (path, data, options) => sandbox.writeFile(path, data, options),
    console: (lines) => sandbox.console(lines),
    async checkpoint(options = {}) {
      const tag = `${runCheckpoints(connection().runId)}${randomBytes(6).toString('hex')}`;
      const r = await sandbox.branch(tag, { mode: options.mode ?? 'live' });
      return { tag, pauseMs: r.pause_ms };
    },
  };
}

/** Is the engine on this host? Then this process's end releases the sandboxes it forked. */
function sameHost(endpoint: string): boolean {
  if (endpoint.startsWith('unix:')) return true;
  const host = new URL(endpoint).hostname;
  return host === 'localhost' || host === '[::1]' || host.startsWith('127.');
}

/** The run's owner, with this worker's pid when the engine can see it: a worker that dies releases its sandboxes. */
function runOwnerHere(): { label: string; pid?: number } {
  const c = connection();
  return { label: runOwner(c.runId), ...(sameHost(c.endpoint) ? { pid: process.pid } : {}) };
}

/** Forks a child of `tag`; `release` kills it. Errors say which snapshot and how to fix it. */
async function forkChild(
  tag: string | null,
  what: string,
): Promise<{ sandbox: Sandbox; release: () => Promise<void> }> {
  if (!tag) {
    throw new ForkdError('FORKD_ERR_BAD_INPUT', `no snapshot is configured for the ${what} fixture`, {
      hint: `name one in forkd({ snapshots, ${what}: 'TAG' })${what === 'postgres' ? ", e.g. { pg: { recipe: 'postgres' } }" : ''}`,
    });
  }
  const sandbox = await client()
    .createSandbox(tag, { owner: runOwnerHere(), ttlS: LEASE_S })
    .catch((err: unknown) => {
      const e = err instanceof ForkdError ? err : new ForkdError('FORKD_ERR_INTERNAL', String(err));
      throw new ForkdError(e.code, `forking ${tag} for the ${what} fixture failed: ${e.message}`, {
        hint: e.hint ?? 'check the forkd snapshots in vitest.config.ts',
        cause: err,
      });
    });
  return { sandbox, release: () => sandbox.kill().catch(() => {}) };
}

function postgresOf(sandbox: Sandbox): PostgresConnection {
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
    sandbox: wrap(sandbox),
  };
}

const CONSOLE_TAIL_LINES = 30;

/**
 * When `task` failed, appends the console tails of `sandboxes` to its first error, so the report
 * shows what the guest said (kernel messages, and the server log for the postgres recipe).
 */
async function attachConsole(task: TestContext['task'], sandboxes: Iterable<Sandbox>): Promise<void> {
  const error = task.result?.state === 'fail' ? task.result.errors?.[0] : undefined;
  if (!error) return;
  for (const sandbox of sandboxes) {
    const text = await sandbox
      .console(CONSOLE_TAIL_LINES)
      .then((t) => t || '(the guest printed nothing)')
      .catch((err: unknown) => `(could not read it: ${errorMessage(err)})`);
    error.message += `\n\nforkd sandbox ${sandbox.id} (snapshot ${sandbox.info.snapshot}), console tail:\n${text}`;
  }
}

/** Forks a child of `checkpoint` for the current test, killed when the test ends (its console attached if it failed). */
async function forkForTest(checkpoint: Checkpoint | string, what: string): Promise<Sandbox> {
  // a name from forkd({ snapshots }) forks its tag on the engine (the Action's, when it stands for it)
  const tag = typeof checkpoint === 'string' ? (connection().tags[checkpoint] ?? checkpoint) : checkpoint.tag;
  const { sandbox, release } = await forkChild(tag, what);
  onTestFinished(async ({ task }) => {
    await attachConsole(task, [sandbox]);
    await release();
  });
  return sandbox;
}

/** Forks a child of a checkpoint (or any snapshot tag) for this test; it is killed when the test ends. */
export async function forkFrom(checkpoint: Checkpoint | string): Promise<ForkdSandbox> {
  return wrap(await forkForTest(checkpoint, 'forkFrom'));
}

/** Like forkFrom(), as a Postgres connection (for checkpoints of a postgres sandbox). */
export async function postgresFrom(checkpoint: Checkpoint | string): Promise<PostgresConnection> {
  return postgresOf(await forkForTest(checkpoint, 'postgresFrom'));
}

/**
 * Runs `setup` once for the suite in a fresh Postgres (migrations, seed data), checkpoints it, and
 * returns a handle every test forks from: `const seeded = seededPostgres(migrate)` then
 * `await seeded.fork()` in each test. The checkpoint is removed after the suite.
 */
export function seededPostgres(
  setup: (postgres: PostgresConnection) => Promise<void>,
  options: { mode?: 'full' | 'diff' | 'live' } = {},
): { fork(): Promise<PostgresConnection> } {
  let checkpoint: Checkpoint | undefined;
  beforeAll(async () => {
    const { sandbox, release } = await forkChild(connection().postgres, 'postgres');
    try {
      const postgres = postgresOf(sandbox);
      await setup(postgres);
      // full: the seed setup is done, so the pause does not matter, and nothing runs on during the copy
      checkpoint = await postgres.sandbox.checkpoint({ mode: options.mode ?? 'full' });
    } finally {
      await release();
    }
  });
  afterAll(async () => {
    if (checkpoint) await removeCheckpoint(checkpoint);
  });
  return {
    fork: () => {
      if (!checkpoint)
        throw new ForkdError('FORKD_ERR_BAD_INPUT', 'the seeded checkpoint is not ready (its setup failed)');
      return postgresFrom(checkpoint);
    },
  };
}

/** Deletes a checkpoint snapshot (and the diff links made from it). */
export async function removeCheckpoint(checkpoint: Checkpoint): Promise<void> {
  await client().deleteSnapshot(checkpoint.tag, { cascade: true });
}

type Scope = 'test' | 'file' | 'worker';
type Fixture<T, C> = [(context: C, use: (value: T) => Promise<void>) => Promise<void>, { scope: Scope }];

/** Children of file- and worker-scoped fixtures alive in this worker: a failing test gets their console tails. */
const sharedChildren = new Set<Sandbox>();

/** `test` with forkd fixtures whose children live for one test (default), one file, or one worker. */
export function forkdTest(scope: Scope = 'test') {
  /** A fixture that forks a child of the configured snapshot for `what`, and kills it after use. */
  const child = <T>(what: 'sandbox' | 'postgres', make: (sandbox: Sandbox) => T): Fixture<T, object> => {
    if (scope === 'test') {
      const perTest: Fixture<T, { task: TestContext['task'] }> = [
        async ({ task }, use) => {
          const { sandbox, release } = await forkChild(connection()[what], what);
          try {
            await use(make(sandbox));
          } finally {
            await attachConsole(task, [sandbox]);
            await release();
          }
        },
        { scope },
      ];
      return perTest as Fixture<T, object>;
    }
    return [
      // eslint-disable-next-line no-empty-pattern -- Vitest requires the destructuring
      async ({}, use) => {
        const { sandbox, release } = await forkChild(connection()[what], what);
        sharedChildren.add(sandbox);
        try {
          await use(make(sandbox));
        } finally {
          sharedChildren.delete(sandbox);
          await release();
        }
      },
      { scope },
    ];
  };
  return base.extend<{ sandbox: ForkdSandbox; postgres: PostgresConnection; forkdConsole: void }>({
    sandbox: child('sandbox', wrap),
    postgres: child('postgres', postgresOf),
    forkdConsole: [
      async ({ task }, use) => {
        await use();
        await attachConsole(task, sharedChildren);
      },
      { auto: true },
    ],
  });
}

/** `test` with a fresh sandbox and a fresh Postgres per test. */
export const test = forkdTest('test');
