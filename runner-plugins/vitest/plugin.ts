import { fileURLToPath } from 'node:url';
import { OPTIONS_ENV, type ForkdVitestOptions } from './options.js';

/**
 * The Vitest (Vite) plugin: `plugins: [forkd({ snapshots: { postgres: { recipe: 'postgres' } } })]`
 * adds forkd's global setup, which finds or starts the engine, checks that it is this package's
 * version, makes the snapshots (or uses the forkd Action's, see `snapshots`) and hands the workers
 * the connection (`inject('forkd')`). `forkd()` alone forks the Action's snapshot.
 */
export function forkd(options: ForkdVitestOptions = {}): { name: string; config: () => object } {
  return {
    name: 'forkd',
    config() {
      // the global setup runs in this process: the options reach it through the environment
      process.env[OPTIONS_ENV] = JSON.stringify(options);
      return { test: { globalSetup: [fileURLToPath(new URL('./global-setup.js', import.meta.url))] } };
    },
  };
}
