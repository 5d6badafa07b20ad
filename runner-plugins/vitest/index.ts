/**
 * forkd-action/vitest: fork-per-test sandboxes and Postgres for Vitest.
 *
 *   // vitest.config.ts
 *   plugins: [forkd({ snapshots: { pg: { recipe: 'postgres' } } })]
 *   // a test file
 *   import { test } from 'forkd-action/vitest';
 *   test('isolated', async ({ postgres }) => { new pg.Client(postgres.url) ... });
 */
import { ForkdError, type Sandbox } from 'forkd-action';
import { afterAll, beforeAll, inject, onTestFinished, test as base, type TestContext } from 'vitest';
import {
  consoleTail,
  RunWorker,
  type Checkpoint,
  type ForkdSandbox,
  type PostgresConnection,
} from '../shared/children.js';
import type { ForkdConnection } from './options.js';

// vitest.config.ts imports the plugin from 'forkd-action/vitest/plugin': this module needs a running Vitest
export type { ForkdVitestOptions, ForkdSnapshotSpec, ForkdConnection } from './options.js';
export type { Checkpoint, ForkdSandbox, PostgresConnection } from '../shared/children.js';

let worker: RunWorker | undefined;

function run(): RunWorker {
  const c: ForkdConnection | undefined = inject('forkd');
  if (!c) {
    throw new ForkdError('FORKD_ERR_BAD_INPUT', 'forkd is not set up for this Vitest run', {
      hint: "add plugins: [forkd({ snapshots: { ... } })] from 'forkd-action/vitest' to vitest.config.ts",
    });
  }
  worker ??= new RunWorker(c);
  return worker;
}

const CONFIG_HINT = 'check the forkd snapshots in vitest.config.ts';

/** Forks a child of `tag` for the `what` fixture; `release` kills it. */
const forkChild = (tag: string | null, what: string) => run().fork(tag, what, CONFIG_HINT);
const wrap = (sandbox: Sandbox) => run().wrap(sandbox);
const postgresOf = (sandbox: Sandbox) => run().postgres(sandbox);

/**
 * When `task` failed, appends the console tails of `sandboxes` to its first error, so the report
 * shows what the guest said (kernel messages, and the server log for the postgres recipe).
 */
async function attachConsole(task: TestContext['task'], sandboxes: Iterable<Sandbox>): Promise<void> {
  const error = task.result?.state === 'fail' ? task.result.errors?.[0] : undefined;
  if (!error) return;
  for (const sandbox of sandboxes) {
    const { title, text } = await consoleTail(sandbox);
    error.message += `\n\n${title}:\n${text}`;
  }
}

/** Forks a child of `checkpoint` for the current test, killed when the test ends (its console attached if it failed). */
async function forkForTest(checkpoint: Checkpoint | string, what: string): Promise<Sandbox> {
  // a name from forkd({ snapshots }) forks its tag on the engine (the Action's, when it stands for it)
  const tag = typeof checkpoint === 'string' ? run().tagOf(checkpoint) : checkpoint.tag;
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
    checkpoint = await run().seedPostgres(setup, options.mode, CONFIG_HINT);
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
export function removeCheckpoint(checkpoint: Checkpoint): Promise<void> {
  return run().removeCheckpoint(checkpoint);
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
          const { sandbox, release } = await forkChild(run().connection[what], what);
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
        const { sandbox, release } = await forkChild(run().connection[what], what);
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
