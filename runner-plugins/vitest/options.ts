import type { ForkdConnection, ForkdRunOptions } from '../shared/options.js';

export type { ForkdConnection, ForkdSnapshotSpec } from '../shared/options.js';

/** What the Vitest integration is configured with (`forkd({...})` in vitest.config.ts); `app` is Playwright's. */
export type ForkdVitestOptions = Omit<ForkdRunOptions, 'app'>;

// inject('forkd') is typed wherever forkd-action/vitest (or its plugin) is imported
declare module 'vitest' {
  export interface ProvidedContext {
    forkd: ForkdConnection;
  }
}

export const OPTIONS_ENV = 'FORKD_VITEST_OPTIONS';
