import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { IsolatedHome, NOTHING_LEFT } from '../helpers/isolated-home.js';
import { runToExit } from '../helpers/run-to-exit.js';

const home = new IsolatedHome();
const root = join(import.meta.dirname, '../..');
const cli = join(root, 'node_modules/@playwright/test/cli.js');
const config = 'test/fixtures/playwright-browser/playwright.config.ts';

/** Runs `playwright test` as a user does, against this file's state dir. */
function playwright() {
  const output = mkdtempSync(join(tmpdir(), 'forkd-pw-results-'));
  const env = home.env({ NO_COLOR: '1' });
  for (const name of ['FORKD_ENDPOINT', 'FORKD_TOKEN', 'FORKD_SNAPSHOT', 'FORKD_SNAPSHOT_SOURCE', 'VITEST']) {
    delete env[name];
  }
  return runToExit(process.execPath, [cli, 'test', '--config', config, '--output', output], { cwd: root, env }).finally(
    () => rmSync(output, { recursive: true, force: true }),
  );
}

function expectNothingLeft(snapshots: string[]) {
  expect(home.qemuProcesses()).toEqual([]);
  expect(existsSync(join(home.root, 'daemon.json'))).toBe(false);
  expect(home.entries('ledger')).toEqual([]);
  expect(home.entries('snapshots').sort()).toEqual(snapshots);
  // the daemon's recipe uploads and build scratch live under tmp; none may stay
  expect(home.entries('tmp')).toEqual([]);
}

afterAll(() => {
  home.killLeakedQemu();
  expect(home.leftovers()).toEqual(NOTHING_LEFT);
  home.remove();
});

describe('a browser in a microVM (forkd({ browser: true }), forkdBrowser)', () => {
  test('a playwright-browser snapshot that is not a browser stops the run before any test, saying why', async () => {
    // the tag forkd({ browser: true }) uses, taken here from the bare base image: no Chromium, no port 9222
    await home.engine.snapshot('playwright-browser', { memoryMiB: 128 });
    try {
      const r = await playwright();
      expect(r.status).toBe(1);
      expect(r.output).toContain('snapshot playwright-browser exposes no port 9222');
      expect(r.output).toContain('forkd rmi playwright-browser');
      expect(r.output).not.toMatch(/\bpassed\b|\bfailed\b/);
      expectNothingLeft(['playwright-browser']);
    } finally {
      await home.engine.removeSnapshot('playwright-browser');
    }
  }, 300_000);

  test('tests on 2 workers each drive their own forked guest Chromium; nothing left', async () => {
    const r = await playwright();
    const logged =
      /the browser is HeadlessChrome\/(\S+) in a microVM \(snapshot playwright-browser\), over CDP from Playwright \d/.exec(
        r.output,
      );
    expect(logged, r.output).not.toBeNull();
    // the tests' browser is the one the setup found in the guest
    expect(r.output).toContain(`browser version in the test: ${logged![1]}`);
    expect(r.output).toMatch(/\b5 passed\b/);
    expect(r.output).not.toMatch(/\bfailed\b|\bflaky\b/);
    expect(r.status).toBe(0);
    expectNothingLeft(['playwright-browser']);
  }, 1_800_000);
});
