/**
 * The baselines of bench/playwright.ts: what the example's specs import from
 * `forkd-action/playwright` (`test` with the `app` fixture and `baseURL` at it, `expect`), served by
 * the todo app on the host (host-app.ts). host.tsconfig.json maps the import here. FORKD_BENCH_HOST
 * picks how:
 *   restart: a new cluster (initdb + schema.sql) and a new app process per test
 *   shared:  one cluster and app per worker, reset to the seed before each test
 */
import { test as base } from '@playwright/test';
import { HostTodoApp, type HostAppFixture } from './host-app.js';

export { expect } from '@playwright/test';

const restartPerTest = process.env.FORKD_BENCH_HOST === 'restart';

export const test = base.extend<{ app: HostAppFixture }, { workerApp: HostTodoApp | null }>({
  workerApp: [
    // eslint-disable-next-line no-empty-pattern -- Playwright requires the destructuring
    async ({}, use) => {
      if (restartPerTest) return use(null);
      const app = await HostTodoApp.start();
      try {
        await use(app);
      } finally {
        await app.stop();
      }
    },
    { scope: 'worker' },
  ],
  app: async ({ workerApp }, use) => {
    if (workerApp) {
      await workerApp.reset();
      return use(workerApp.fixture());
    }
    const app = await HostTodoApp.start();
    try {
      await use(app.fixture());
    } finally {
      await app.stop();
    }
  },
  baseURL: async ({ app }, use) => use(app.url),
});
