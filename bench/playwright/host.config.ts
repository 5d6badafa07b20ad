import { defineConfig } from '@playwright/test';
import example from '../../examples/playwright-app/playwright.config.js';

/**
 * The example's config (2 workers, headless, Debian's chromium) with its forkd global setup taken
 * out and its specs' `forkd-action/playwright` import mapped to host-fixtures.ts (bench/playwright.ts).
 */
export default defineConfig({
  ...example,
  globalSetup: undefined,
  testDir: '../../examples/playwright-app/tests',
  tsconfig: './host.tsconfig.json',
});
