/** Checks, before any test runs, that the Chromium the projects launch on this host is there. */
import { existsSync } from 'node:fs';
import { chromium, type FullConfig } from '@playwright/test';
import { ForkdError } from 'forkd-action';

const BOTH_WAYS =
  "run npx playwright install chromium, or install your distribution's (Debian/Ubuntu: sudo apt-get install chromium) and set use: { launchOptions: { executablePath: '/usr/bin/chromium' } }";

/**
 * A project whose launchOptions.executablePath names no file stops the run here, with a hint. One
 * that relies on Playwright's own download gets a warning when it is missing (a suite of API tests
 * opens no browser). Projects whose browser runs in a microVM (forkdBrowser) or elsewhere, or that use
 * another browser, are not checked here.
 */
export function checkHostChromium(config: FullConfig, warn: (line: string) => void): void {
  for (const { name, use } of config.projects) {
    const inMicroVm = (use as { forkdBrowser?: boolean }).forkdBrowser;
    if ((use.browserName ?? 'chromium') !== 'chromium' || use.connectOptions || use.channel || inMicroVm) continue;
    const project = JSON.stringify(name || 'default');
    const configured = use.launchOptions?.executablePath;
    if (configured && !existsSync(configured)) {
      throw new ForkdError(
        'FORKD_ERR_NOT_FOUND',
        `project ${project}: no Chromium at ${configured} (launchOptions.executablePath)`,
        { hint: `install it there or point executablePath at one; ${BOTH_WAYS}` },
      );
    }
    if (!configured && !existsSync(chromium.executablePath()))
      warn(
        `forkd: project ${project}: no Chromium at ${chromium.executablePath()}: tests that open a page will fail; ${BOTH_WAYS}`,
      );
  }
}
