import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

/** The example suite with its forkd fixtures swapped for host-Postgres ones (bench/vitest-suite.ts). */
export default defineConfig({
  resolve: {
    alias: [
      { find: /^forkd-action\/vitest$/, replacement: fileURLToPath(new URL('host-fixtures.ts', import.meta.url)) },
    ],
  },
  test: {
    root: fileURLToPath(new URL('../../examples/vitest-postgres', import.meta.url)),
    include: ['tests/**/*.test.ts'],
    globalSetup: [fileURLToPath(new URL('host-global-setup.ts', import.meta.url))],
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 120_000,
  },
});
