import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: ['test/fixtures/**', '**/node_modules/**'], // fixture suites run inside tests, with their own config
    globalSetup: ['test/global-setup.ts'],
    reporters: ['default', './test/helpers/summary-reporter.ts'],
    pool: 'forks',
    // Guests run under TCG on 2-core machines: two files at a time keeps boots from starving each other.
    maxWorkers: 2,
    testTimeout: 120_000,
    hookTimeout: 300_000,
    unstubEnvs: true,
    restoreMocks: true,
  },
});
