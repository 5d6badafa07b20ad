import { fileURLToPath } from 'node:url';
import { OPTIONS_ENV, type ForkdVitestOptions } from './options.js';

/**
 * The Vitest (Vite) plugin: `plugins: [forkd({ snapshots: { pg: { recipe: 'postgres' } } })]`
 * adds forkd's global setup, which finds or starts the engine, makes the snapshots and hands the
 * workers the connection (`inject('forkd')`).
 */
export function forkd(options: ForkdVitestOptions): { name: string; config: () => object } {
  return {
    name: 'forkd',
    config() {
      // the global setup runs in this process: the options reach it through the environment
      process.env[OPTIONS_ENV] = JSON.stringify(options);
      return { test: { globalSetup: [fileURLToPath(new URL('./global-setup.js', import.meta.url))] } };
    },
  };
}
