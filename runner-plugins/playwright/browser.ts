/**
 * A browser in a microVM: the `playwright-browser` recipe's Chromium, started in the parent's
 * warm-up, and one forked child per test worker, which Playwright drives over the Chrome DevTools
 * Protocol (`chromium.connectOverCDP`). The page runs in the guest; nothing runs a browser on the host.
 *
 * CDP rather than a Playwright browser server in the guest: playwright-core needs Node >= 20 and
 * exits on Debian bookworm's Node 18, and CDP needs no Node (nor a Playwright of the same
 * version) in the guest at all.
 */
import { createRequire } from 'node:module';
import { chromium, type Browser } from '@playwright/test';
import { ForkdError, errorMessage } from 'forkd-action';
import { RunWorker } from '../shared/children.js';
import type { Run } from '../shared/run-setup.js';
import type { ForkdPlaywrightOptions } from './options.js';

/** The packaged recipe, and the name its snapshot has in the run (and its tag, unless the Action made it). */
export const BROWSER_SNAPSHOT = 'playwright-browser';
/** The guest port of Chromium's DevTools endpoint (recipes/playwright-browser). */
export const CDP_PORT = 9222;
/**
 * Under TCG a fresh child's browser takes seconds to answer its first commands: Playwright's 30 s
 * default is too close for a busy 2-core runner.
 */
const CONNECT_TIMEOUT_MS = 180_000;
const VERSION_TIMEOUT_MS = 60_000;

const CONFIG_HINT = "forkd({ browser: true }) in playwright.config.ts makes the 'playwright-browser' snapshot";

/** The run's snapshots, with the browser's when `forkd({ browser: true })`. */
export function withBrowserSnapshot(options: ForkdPlaywrightOptions): ForkdPlaywrightOptions {
  if (!options.browser) return options;
  return { ...options, snapshots: { ...options.snapshots, [BROWSER_SNAPSHOT]: { recipe: BROWSER_SNAPSHOT } } };
}

/** What a guest browser says it is (`GET /json/version` of its DevTools endpoint). */
export interface GuestBrowserVersion {
  /** `HeadlessChrome/150.0.7871.100` */
  browser: string;
  protocol: string;
}

/** Chromium's DevTools endpoint at a child's forwarded port; a clear error when something else answers. */
export async function guestBrowserVersion(port: number, tag: string): Promise<GuestBrowserVersion> {
  const url = `http://127.0.0.1:${port}/json/version`;
  const problem = (what: string) =>
    new ForkdError('FORKD_ERR_SNAPSHOT', `snapshot ${tag} is not a browser forkd can drive: ${what}`, {
      hint: `remove it (forkd rmi ${tag}) so that forkd({ browser: true }) makes it again from the playwright-browser recipe`,
    });
  let reply: { Browser?: unknown; 'Protocol-Version'?: unknown };
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(VERSION_TIMEOUT_MS) });
    reply = (await response.json()) as typeof reply;
  } catch (err) {
    throw problem(`${url} did not answer as Chromium's DevTools endpoint (${errorMessage(err)})`);
  }
  if (typeof reply.Browser !== 'string' || !/^(Headless)?Chrome\/\d+\./.test(reply.Browser))
    throw problem(`${url} answered ${JSON.stringify(reply).slice(0, 200)}, not a Chromium`);
  return { browser: reply.Browser, protocol: String(reply['Protocol-Version']) };
}

/** The guest port 9222 of a child, forwarded to this host. */
function cdpPort(ports: Record<string, number>, tag: string): number {
  const port = ports[String(CDP_PORT)];
  if (!port)
    throw new ForkdError('FORKD_ERR_SNAPSHOT', `snapshot ${tag} exposes no port ${CDP_PORT} (Chromium's DevTools)`, {
      hint: `remove it (forkd rmi ${tag}) so that forkd({ browser: true }) makes it again from the playwright-browser recipe`,
    });
  return port;
}

/**
 * Before any test runs: forks one child of the browser snapshot and asks its Chromium what it is,
 * and logs it with the user's Playwright. A snapshot that is not a browser ends the run here.
 */
export async function checkBrowserSnapshot(run: Run, log: (line: string) => void): Promise<Run> {
  const worker = new RunWorker(run.connection);
  try {
    const tag = worker.tagOf(BROWSER_SNAPSHOT);
    const { sandbox, release } = await worker.fork(tag, 'browser', CONFIG_HINT);
    try {
      const { browser } = await guestBrowserVersion(cdpPort(sandbox.info.ports, tag), tag);
      log(
        `forkd: the browser is ${browser} in a microVM (snapshot ${tag}), over CDP from Playwright ${playwrightVersion()}`,
      );
      return run;
    } finally {
      await release();
    }
  } catch (err) {
    await run.teardown();
    throw err;
  } finally {
    await worker.close();
  }
}

/** The user's @playwright/test (the one this plugin runs in). */
function playwrightVersion(): string {
  return (createRequire(import.meta.url)('@playwright/test/package.json') as { version: string }).version;
}

/** A worker's browser: Chromium in its own child of the browser snapshot, connected over CDP. */
export async function connectGuestBrowser(run: RunWorker): Promise<{ browser: Browser; release(): Promise<void> }> {
  if (!(BROWSER_SNAPSHOT in run.connection.tags)) {
    throw new ForkdError('FORKD_ERR_BAD_INPUT', 'forkdBrowser is on, but the run has no browser snapshot', {
      hint: 'add browser: true to forkd({ ... }) in playwright.config.ts',
    });
  }
  const tag = run.tagOf(BROWSER_SNAPSHOT);
  const child = await run.fork(tag, 'browser', CONFIG_HINT);
  try {
    const port = cdpPort(child.sandbox.info.ports, tag);
    const browser = await chromium.connectOverCDP(`http://127.0.0.1:${port}`, { timeout: CONNECT_TIMEOUT_MS });
    return {
      browser,
      async release() {
        await browser.close().catch(() => {});
        await child.release();
      },
    };
  } catch (err) {
    await child.release();
    throw err;
  }
}
