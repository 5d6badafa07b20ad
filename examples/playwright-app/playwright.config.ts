import { existsSync } from 'node:fs';
import { defineConfig } from '@playwright/test';
import { forkd } from 'forkd-action/playwright';

// Debian's chromium package when it is there (Playwright's browser download is not reachable from
// every CI); without it, `npx playwright install chromium` and drop executablePath
const chromium = '/usr/bin/chromium';

export default defineConfig({
  testDir: './tests',
  workers: 2,
  fullyParallel: true,
  reporter: 'list',
  // the app's snapshot: built from ./todo-app on first use, reused after; every test forks a child of it
  globalSetup: forkd({ snapshots: { app: { recipe: './todo-app' } } }),
  use: {
    headless: true,
    launchOptions: existsSync(chromium) ? { executablePath: chromium } : {},
  },
});
