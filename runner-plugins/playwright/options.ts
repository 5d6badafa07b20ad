import type { ForkdConnection, ForkdRunOptions } from '../shared/options.js';

export type { ForkdSnapshotSpec } from '../shared/options.js';

/** What `forkd({...})` in playwright.config.ts takes. */
export interface ForkdPlaywrightOptions extends ForkdRunOptions {
  /** The guest port `baseURL` points at, in the app's child (default: the lowest port its snapshot exposes). */
  appPort?: number;
  /**
   * Make the `playwright-browser` snapshot (Chromium in a microVM) if missing, and check it before
   * any test runs; `test.use({ forkdBrowser: true })` then gives workers a browser there.
   */
  browser?: boolean;
}

/** What the global setup hands the workers. */
export interface PlaywrightConnection extends ForkdConnection {
  appPort: number | null;
}

/** The options reach the global setup through the environment, as the config is loaded in the runner's process. */
export const OPTIONS_ENV = 'FORKD_PLAYWRIGHT_OPTIONS';
/** The global setup hands the workers the connection through the environment (Playwright passes it on). */
export const CONNECTION_ENV = 'FORKD_PLAYWRIGHT_CONNECTION';
