import { forkd } from 'forkd-action/vitest/plugin';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  plugins: [
    // the postgres recipe's snapshot, built and taken on first use, reused after; after the forkd
    // Action (snapshot: postgres) the suite forks the Action's snapshot instead of taking its own
    forkd({ snapshots: { pg: { recipe: 'postgres' } } }),
  ],
  test: {
    root: import.meta.dirname,
    include: ['tests/**/*.test.ts'],
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 600_000, // the first run builds the postgres image (about a minute)
  },
});
