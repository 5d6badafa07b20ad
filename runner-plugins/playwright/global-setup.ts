import { dirname } from 'node:path';
import type { FullConfig } from '@playwright/test';
import { ForkdError } from 'forkd-action';
import { startRun, type Run } from '../shared/run-setup.js';
import { checkBrowserSnapshot, withBrowserSnapshot } from './browser.js';
import { checkHostChromium } from './host-browser.js';
import { CONNECTION_ENV, OPTIONS_ENV, type ForkdPlaywrightOptions, type PlaywrightConnection } from './options.js';

const log = (line: string) => process.stderr.write(`${line}\n`);

async function setUpRun(config: FullConfig, options: ForkdPlaywrightOptions): Promise<Run> {
  checkHostChromium(config, log);
  const run = await startRun({
    runner: 'playwright',
    options: withBrowserSnapshot(options),
    workers: config.workers,
    configDir: config.configFile ? dirname(config.configFile) : config.rootDir,
    log,
  });
  return options.browser ? checkBrowserSnapshot(run, log) : run;
}

export default async function setup(config: FullConfig): Promise<() => Promise<void>> {
  const raw = process.env[OPTIONS_ENV];
  if (!raw) {
    throw new ForkdError('FORKD_ERR_BAD_INPUT', 'forkd global setup has no options', {
      hint: "in playwright.config.ts: globalSetup: forkd({ snapshots: { app: { recipe: './app-recipe' } } })",
    });
  }
  const options = JSON.parse(raw) as ForkdPlaywrightOptions;
  const run = await setUpRun(config, options).catch((err: unknown) => {
    // Playwright prints an error's message and stack, not its code or hint
    throw err instanceof ForkdError
      ? new ForkdError(err.code, `${err.code}: ${err.describe()}`, { hint: err.hint })
      : err;
  });
  const connection: PlaywrightConnection = { ...run.connection, appPort: options.appPort ?? null };
  process.env[CONNECTION_ENV] = JSON.stringify(connection);
  return run.teardown;
}
