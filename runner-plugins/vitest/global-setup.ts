import { ForkdError } from 'forkd-action';
import { startRun } from '../shared/run-setup.js';
import { OPTIONS_ENV, type ForkdConnection, type ForkdVitestOptions } from './options.js';

interface Project {
  provide(key: 'forkd', value: ForkdConnection): void;
  config: { maxWorkers?: number | string; root: string };
}

export default async function setup(project: Project): Promise<() => Promise<void>> {
  const raw = process.env[OPTIONS_ENV];
  if (!raw) {
    throw new ForkdError('FORKD_ERR_BAD_INPUT', 'forkd global setup has no options', {
      hint: "add the plugin to vitest.config.ts: plugins: [forkd({ snapshots: { postgres: { recipe: 'postgres' } } })]",
    });
  }
  const run = await startRun({
    runner: 'vitest',
    options: JSON.parse(raw) as ForkdVitestOptions,
    workers: Number(project.config.maxWorkers) || 2,
    configDir: project.config.root,
  });
  project.provide('forkd', run.connection);
  return run.teardown;
}
