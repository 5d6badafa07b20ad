import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { Controller } from '../../src/client/controller.js';
import { IsolatedHome, NOTHING_LEFT } from '../helpers/isolated-home.js';
import { runToExit } from '../helpers/run-to-exit.js';

const home = new IsolatedHome();
const root = join(import.meta.dirname, '../..');
const cli = join(root, 'node_modules/@playwright/test/cli.js');

/** Runs `playwright test` as a user does, against this file's state dir; its test-results go to a temp dir. */
function playwright(config: string, extra: Record<string, string> = {}) {
  const output = mkdtempSync(join(tmpdir(), 'forkd-pw-results-'));
  return runToExit(process.execPath, [cli, 'test', '--config', config, '--output', output], {
    cwd: root,
    env: runEnv(extra),
  }).finally(() => rmSync(output, { recursive: true, force: true }));
}

/** The env of a Playwright run of its own against this file's state dir. */
function runEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = home.env({ NO_COLOR: '1', ...extra });
  for (const name of ['FORKD_ENDPOINT', 'FORKD_TOKEN', 'FORKD_SNAPSHOT', 'FORKD_SNAPSHOT_SOURCE', 'VITEST']) {
    delete env[name];
  }
  return env;
}

afterAll(() => {
  expect(home.leftovers()).toEqual(NOTHING_LEFT);
  home.remove();
});

/** A run's checkpoints and sandboxes are gone with its own daemon: only the snapshots it made stay. */
function expectNothingLeft(kept: string[]) {
  expect(home.qemuProcesses()).toEqual([]);
  expect(existsSync(join(home.root, 'daemon.json'))).toBe(false);
  expect(home.entries('ledger')).toEqual([]);
  expect(home.entries('snapshots').sort()).toEqual(kept);
}

describe('forkd-action/playwright', () => {
  test('the example app: every test on its own fork of the app and its database, 2 workers, headless Chromium; nothing left', async () => {
    const r = await playwright('examples/playwright-app/playwright.config.ts');
    expect(r.output).toMatch(/\b1[0-9] passed\b/);
    expect(r.output).not.toMatch(/\bfailed\b|\bflaky\b/);
    expect(r.status).toBe(0);
    expectNothingLeft(['app']);
  }, 1_800_000);

  test("a worker killed mid-test: its sandbox is reaped at once, the other worker's tests pass, nothing left", async () => {
    const out = mkdtempSync(join(tmpdir(), 'forkd-pw-'));
    const run = playwright('test/fixtures/playwright-killed/playwright.config.ts', { FORKD_TEST_OUT: out });
    const victim = join(out, 'victim.json');
    const deadline = Date.now() + 600_000;
    while (!existsSync(victim) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    const { pid, sandbox } = JSON.parse(readFileSync(victim, 'utf8')) as { pid: number; sandbox: string };
    const daemon = JSON.parse(readFileSync(join(home.root, 'daemon.json'), 'utf8')) as {
      endpoint: string;
      token_file: string;
    };
    const engine = new Controller({ endpoint: daemon.endpoint, token: readFileSync(daemon.token_file, 'utf8').trim() });
    try {
      expect((await engine.listSandboxes()).map((s) => s.id)).toContain(sandbox);
      process.kill(pid, 'SIGKILL');
      const killed = Date.now();
      while ((await engine.listSandboxes()).some((s) => s.id === sandbox)) {
        expect(Date.now() - killed).toBeLessThan(5_000); // the owner's pid exited: no lease to wait out
        await new Promise((r) => setTimeout(r, 50));
      }
    } finally {
      await engine.close();
    }
    const r = await run;
    rmSync(out, { recursive: true, force: true });
    expect(r.output).toMatch(/\b4 passed\b/);
    expect(r.output).toMatch(/\b1 failed\b/); // the killed worker's test
    expect(r.status).toBe(1);
    expectNothingLeft(['app', 'plain']);
  }, 900_000);

  test('an app whose readiness check never passes, or no Chromium: the run stops before any test, saying why', async () => {
    const neverReady = await playwright('test/fixtures/playwright-bad/playwright.config.ts', {
      FORKD_TEST_CASE: 'never-ready',
    });
    expect(neverReady.status).toBe(1);
    expect(neverReady.output).toContain('step ready failed: not ready after 3000 ms: sleep 60 (');
    expect(neverReady.output).toContain('the-app-started-but-never-answers'); // the guest console's tail
    expect(neverReady.output).not.toMatch(/\bpassed\b|never runs/);
    // the parent that failed keeps its console log, as a failed start does (the error names it)
    const logs = home.entries('logs');
    expect(logs).toHaveLength(1);
    for (const log of logs) rmSync(join(home.root, 'logs', log));

    const noBrowser = await playwright('test/fixtures/playwright-bad/playwright.config.ts', {
      FORKD_TEST_CASE: 'no-browser',
    });
    expect(noBrowser.status).toBe(1);
    expect(noBrowser.output).toContain('no Chromium at /nonexistent/chromium (launchOptions.executablePath)');
    expect(noBrowser.output).toContain('sudo apt-get install chromium');
    expect(noBrowser.output).not.toMatch(/\bpassed\b|never runs/);
    expectNothingLeft(['app', 'plain']);
  }, 600_000);
});
