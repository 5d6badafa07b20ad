import { spawn } from 'node:child_process';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, test } from 'vitest';
import { ForkdError } from '../../src/errors.js';
import { IsolatedHome, NOTHING_LEFT } from '../helpers/isolated-home.js';

const home = new IsolatedHome();
const engine = home.engine;
const fixtures = join(import.meta.dirname, '../fixtures/recipes');
const cli = join(import.meta.dirname, '../../bin/forkd.js');

async function snapshotError(recipe: string): Promise<ForkdError> {
  const err: unknown = await engine.snapshot('bad', { recipe: join(fixtures, recipe) }).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ForkdError);
  return err as ForkdError;
}

afterEach(async () => {
  // nothing half-built: no snapshot, no staging dir, no image
  expect(await engine.snapshots.list()).toEqual([]);
  expect(home.entries('snapshots')).toEqual([]);
  expect(home.qemuProcesses()).toEqual([]);
});

afterAll(() => {
  expect(home.leftovers()).toEqual(NOTHING_LEFT);
  home.remove();
});

describe('a recipe that cannot become a snapshot fails at its step and leaves nothing behind', () => {
  test('an unknown package stops the build at its bootstrap step, with its output and a hint (CLI)', async () => {
    const r = await new Promise<{ status: number | null; stderr: string }>((resolve) => {
      const child = spawn(
        process.execPath,
        [cli, 'snapshot', '--tag', 'bad', '--recipe', join(fixtures, 'bad-package')],
        {
          env: home.env(),
          stdio: ['ignore', 'ignore', 'pipe'],
        },
      );
      let stderr = '';
      child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
      child.on('close', (status) => resolve({ status, stderr }));
    });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('recipe bad-package: step bootstrap failed');
    expect(r.stderr).toContain('Unable to locate package no-such-package-forkd');
    expect(r.stderr).toMatch(/hint: check that every package .* exists in Debian bookworm/);
    const images = join(home.root, 'images', 'rootfs-bad-package');
    expect(existsSync(images) ? readdirSync(images) : []).toEqual([]);
  }, 300_000);

  test('a failing build command stops the build at its build step, with its output', async () => {
    const err = await snapshotError('failing-build');
    expect(err.code).toBe('FORKD_ERR_BUILD');
    expect(err.message).toMatch(/^recipe failing-build: step build failed: /);
    expect(err.message).toContain('build-broke');
    expect(err.hint).toMatch(/build command failed/);
    expect(home.entries('tmp')).toEqual([]);
  }, 300_000);

  test('an image too small for its tree stops the build at its mke2fs step', async () => {
    const err = await snapshotError('too-small');
    expect(err.code).toBe('FORKD_ERR_BUILD');
    expect(err.message).toMatch(/^recipe too-small: step mke2fs failed: /);
    expect(err.hint).toMatch(/raise "image_mib"/);
    const images = join(home.root, 'images', 'rootfs-too-small');
    expect(existsSync(images) ? readdirSync(images) : []).toEqual([]);
  }, 300_000);

  test('a failing warm-up: its exit code, its output and the guest console tail', async () => {
    const err = await snapshotError('failing-warmup');
    expect(err.code).toBe('FORKD_ERR_SNAPSHOT');
    expect(err.message).toMatch(
      /^step warm-up failed: exited 7: echo preparing; echo boom >&2; exit 7\npreparing\nboom\n/,
    );
    expect(err.message).toContain(`console log: ${err.consoleLog}`);
    expect(err.message).toContain('forkd-agent: ready'); // the console tail
    expect(err.hint).toMatch(/must exit 0/);
    expect(existsSync(err.consoleLog!)).toBe(true);
    rmSync(err.consoleLog!);
  });

  test('a readiness check that never passes gives up after ready_timeout_s', async () => {
    const started = performance.now();
    const err = await snapshotError('never-ready');
    expect(performance.now() - started).toBeLessThan(60_000);
    expect(err.code).toBe('FORKD_ERR_SNAPSHOT');
    expect(err.message).toMatch(
      /^step ready failed: not ready after 2000 ms: .*test -e \/nonexistent \(last exit 1\)\nwaiting for \/nonexistent\n/,
    );
    expect(err.hint).toMatch(/ready_timeout_s/);
    rmSync(err.consoleLog!);
  });
});
