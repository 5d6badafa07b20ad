/**
 * forkd-action/playwright: each test gets its own app, database or sandbox, forked from a warmed parent.
 *
 *   // playwright.config.ts
 *   globalSetup: forkd({ snapshots: { app: { recipe: './app-recipe' } } }),
 *   // a spec file
 *   import { test, expect } from 'forkd-action/playwright';
 *   test('adds', async ({ page }) => { await page.goto('/'); ... });   // baseURL: this test's own app
 */
import { fileURLToPath } from 'node:url';
import { test as base, type TestInfo } from '@playwright/test';
import { ForkdError, type Sandbox } from 'forkd-action';
import {
  consoleTail,
  RunWorker,
  type Checkpoint,
  type Child,
  type ForkdSandbox,
  type PostgresConnection,
} from '../shared/children.js';
import { connectGuestBrowser } from './browser.js';
import { CONNECTION_ENV, OPTIONS_ENV, type ForkdPlaywrightOptions, type PlaywrightConnection } from './options.js';

export { expect } from '@playwright/test';
export type { ForkdPlaywrightOptions, ForkdSnapshotSpec } from './options.js';
export type { Checkpoint, ForkdSandbox, PostgresConnection } from '../shared/children.js';

/**
 * The global setup for playwright.config.ts: `globalSetup: forkd({ snapshots: {...} })`. It finds
 * or starts the engine, checks its version, makes the snapshots (or uses the forkd Action's) and
 * hands the workers the connection; its teardown gives back what the run took.
 */
export function forkd(options: ForkdPlaywrightOptions = {}): string {
  process.env[OPTIONS_ENV] = JSON.stringify(options);
  return fileURLToPath(new URL('./global-setup.js', import.meta.url));
}

/** A test's own web app: a child of the app snapshot; `baseURL` is `url`. */
export interface ForkdApp {
  url: string;
  /** The host port `url` points at (the child's forwarded app port). */
  port: number;
  /** Every guest port of the child -> its host port (5432 reaches the app's database, when exposed). */
  ports: Record<string, number>;
  sandbox: ForkdSandbox;
}

/** Children live for one test (default) or for the worker: `test.use({ forkdScope: 'worker' })`. */
export type ForkdScope = 'test' | 'worker';
type What = 'sandbox' | 'postgres' | 'app';

const CONFIG_HINT = 'check forkd({ snapshots }) in playwright.config.ts';

function connection(): PlaywrightConnection {
  const raw = process.env[CONNECTION_ENV];
  if (!raw) {
    throw new ForkdError('FORKD_ERR_BAD_INPUT', 'forkd is not set up for this Playwright run', {
      hint: "add globalSetup: forkd({ snapshots: { ... } }) from 'forkd-action/playwright' to playwright.config.ts",
    });
  }
  return JSON.parse(raw) as PlaywrightConnection;
}

/** This worker's part of the run, and the children it keeps for worker-scoped fixtures. */
class WorkerChildren {
  readonly run = new RunWorker(connection());
  private readonly kept = new Map<What, Promise<Child>>();

  forTheWorker(what: What): Promise<Child> {
    let child = this.kept.get(what);
    if (!child) {
      child = this.run.fork(this.run.connection[what], what, CONFIG_HINT);
      // a fork that failed is not kept: the next test tries again, and reports its own error
      child.catch(() => this.kept.delete(what));
      this.kept.set(what, child);
    }
    return child;
  }

  async close(): Promise<void> {
    const children = await Promise.allSettled(this.kept.values());
    for (const c of children) if (c.status === 'fulfilled') await c.value.release();
    await this.run.close();
  }
}

/** The children one test uses: forked for it, or the worker's; their console tails go into a failing test's report. */
class TestChildren {
  private readonly own = new Map<What, Promise<Child>>();
  private readonly used = new Set<Sandbox>();
  private readonly forked: Child[] = [];

  constructor(
    private readonly worker: WorkerChildren,
    private readonly scope: ForkdScope,
  ) {}

  get run(): RunWorker {
    return this.worker.run;
  }

  async get(what: What): Promise<Sandbox> {
    let child = this.own.get(what);
    if (!child) {
      child =
        this.scope === 'worker'
          ? this.worker.forTheWorker(what)
          : this.run.fork(this.run.connection[what], what, CONFIG_HINT).then((c) => (this.forked.push(c), c));
      this.own.set(what, child);
    }
    const { sandbox } = await child;
    this.used.add(sandbox);
    return sandbox;
  }

  /** Forks a child of a checkpoint or tag for this test only. */
  async fork(tag: string, what: string): Promise<Sandbox> {
    const child = await this.run.fork(tag, what, CONFIG_HINT);
    this.forked.push(child);
    this.used.add(child.sandbox);
    return child.sandbox;
  }

  async end(testInfo: TestInfo): Promise<void> {
    // a fork still under way when the test ended (a timeout) lands in `forked` before it is released
    await Promise.allSettled(this.own.values());
    if (testInfo.status !== testInfo.expectedStatus) await attachConsoles(testInfo, this.used);
    for (const child of this.forked) await child.release();
  }
}

async function attachConsoles(testInfo: TestInfo, sandboxes: Iterable<Sandbox>): Promise<void> {
  for (const sandbox of sandboxes) {
    const { title, text } = await consoleTail(sandbox);
    await testInfo.attach(title, { body: text, contentType: 'text/plain' });
  }
}

function appOf(run: RunWorker, sandbox: Sandbox): ForkdApp {
  const exposed = Object.keys(sandbox.info.ports).map(Number);
  const wanted = connection().appPort ?? (exposed.length ? Math.min(...exposed) : undefined);
  const port = wanted === undefined ? undefined : sandbox.info.ports[String(wanted)];
  if (!port) {
    const what = wanted === undefined ? 'no port' : `no port ${wanted}`;
    throw new ForkdError('FORKD_ERR_BAD_INPUT', `sandbox ${sandbox.id} exposes ${what} for the app`, {
      hint: 'list the app port in the recipe\u2019s "ports", or set forkd({ appPort }) to one it exposes',
    });
  }
  return { url: `http://127.0.0.1:${port}`, port, ports: sandbox.info.ports, sandbox: run.wrap(sandbox) };
}

export interface ForkdFixtures {
  /** Whether this test's children are its own (default) or its worker's. */
  forkdScope: ForkdScope;
  sandbox: ForkdSandbox;
  postgres: PostgresConnection;
  app: ForkdApp;
  /** Forks a child of a checkpoint (or any tag) for this test only. */
  forkFrom: (checkpoint: Checkpoint | string) => Promise<ForkdSandbox>;
  forkdChildren: TestChildren;
}

export interface ForkdWorkerFixtures {
  /** The worker's `browser` is Chromium in a microVM of its own (needs forkd({ browser: true })). */
  forkdBrowser: boolean;
  forkdWorker: WorkerChildren;
}

/** `test` with forkd fixtures; `page` goes to this test's own app when one is configured. */
export const test = base.extend<ForkdFixtures, ForkdWorkerFixtures>({
  forkdScope: ['test', { option: true }],
  forkdBrowser: [false, { option: true, scope: 'worker' }],
  forkdWorker: [
    // eslint-disable-next-line no-empty-pattern -- Playwright requires the destructuring
    async ({}, use) => {
      const worker = new WorkerChildren();
      try {
        await use(worker);
      } finally {
        await worker.close();
      }
    },
    { scope: 'worker' },
  ],
  browser: [
    async ({ forkdBrowser, forkdWorker, playwright, browserName, connectOptions }, use) => {
      if (forkdBrowser) {
        const guest = await connectGuestBrowser(forkdWorker.run);
        try {
          await use(guest.browser);
        } finally {
          await guest.release();
        }
        return;
      }
      // Playwright's own browser fixture, which an override cannot fall back to
      const browser = connectOptions
        ? await playwright[browserName].connect(connectOptions.wsEndpoint, connectOptions)
        : await playwright[browserName].launch();
      await use(browser);
      await browser.close({ reason: 'Test ended.' });
    },
    { scope: 'worker', timeout: 0 },
  ],
  forkdChildren: async ({ forkdWorker, forkdScope }, use, testInfo) => {
    const children = new TestChildren(forkdWorker, forkdScope);
    try {
      await use(children);
    } finally {
      await children.end(testInfo);
    }
  },
  sandbox: async ({ forkdChildren }, use) => use(forkdChildren.run.wrap(await forkdChildren.get('sandbox'))),
  postgres: async ({ forkdChildren }, use) => use(forkdChildren.run.postgres(await forkdChildren.get('postgres'))),
  app: async ({ forkdChildren }, use) => use(appOf(forkdChildren.run, await forkdChildren.get('app'))),
  forkFrom: async ({ forkdChildren }, use) =>
    use(async (checkpoint) => {
      const run = forkdChildren.run;
      const tag = typeof checkpoint === 'string' ? run.tagOf(checkpoint) : checkpoint.tag;
      return run.wrap(await forkdChildren.fork(tag, 'forkFrom'));
    }),
  baseURL: async ({ baseURL, forkdChildren }, use) => {
    if (!forkdChildren.run.connection.app) return use(baseURL);
    await use(appOf(forkdChildren.run, await forkdChildren.get('app')).url);
  },
});

/**
 * Runs `setup` once per worker and spec file in a fresh Postgres (migrations, seed data),
 * checkpoints it, and returns a handle each test forks from: `const seeded = seededPostgres(migrate)`
 * at the top of a spec file, then `await seeded.fork()` in a test. The checkpoint is removed after the file.
 */
export function seededPostgres(
  setup: (postgres: PostgresConnection) => Promise<void>,
  options: { mode?: 'full' | 'diff' | 'live' } = {},
): { fork(): Promise<PostgresConnection> } {
  let run: RunWorker | undefined;
  let checkpoint: Checkpoint | undefined;
  let forked: Child[] = [];
  test.beforeAll(async ({ forkdWorker }) => {
    run = forkdWorker.run;
    checkpoint = await run.seedPostgres(setup, options.mode, CONFIG_HINT);
  });
  // eslint-disable-next-line no-empty-pattern -- Playwright requires the destructuring
  test.afterEach(async ({}, testInfo) => {
    const children = forked;
    forked = [];
    if (testInfo.status !== testInfo.expectedStatus)
      await attachConsoles(
        testInfo,
        children.map((c) => c.sandbox),
      );
    for (const child of children) await child.release();
  });
  test.afterAll(async () => {
    if (checkpoint && run) await run.removeCheckpoint(checkpoint);
  });
  return {
    async fork() {
      if (!run || !checkpoint)
        throw new ForkdError('FORKD_ERR_BAD_INPUT', 'the seeded checkpoint is not ready (its setup failed)');
      const child = await run.fork(checkpoint.tag, 'seededPostgres', CONFIG_HINT);
      forked.push(child);
      return run.postgres(child.sandbox);
    },
  };
}
