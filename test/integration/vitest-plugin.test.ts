import { spawn } from 'node:child_process';
import {
  cpSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { packageVersion } from '../../src/common/package-root.js';
import { IsolatedHome, NOTHING_LEFT } from '../helpers/isolated-home.js';
import { runToExit, type Finished } from '../helpers/run-to-exit.js';

const home = new IsolatedHome();
const root = join(import.meta.dirname, '../..');

/** Runs a Vitest suite the way a user does, in its own process, against this file's state dir. */
function vitest(config: string, extraEnv: Record<string, string> = {}): Promise<Finished> {
  const env = home.env({ NO_COLOR: '1' });
  for (const name of ['FORKD_ENDPOINT', 'FORKD_TOKEN', 'FORKD_SNAPSHOT', 'FORKD_SNAPSHOT_SOURCE']) delete env[name];
  Object.assign(env, extraEnv);
  delete env.VITEST; // the inner run is a run of its own, not a worker of this one
  delete env.VITEST_POOL_ID;
  delete env.VITEST_WORKER_ID;
  const cli = join(root, 'node_modules/vitest/vitest.mjs');
  return runToExit(process.execPath, [cli, 'run', '--config', config], { cwd: root, env });
}

const misconfigured = 'test/fixtures/vitest-misconfigured/vitest.config.ts';

/**
 * `forkd serve` of this file's state dir from a copy of the engine bundle whose package.json says
 * `version`: a real engine of another release, as a stale global install or another Action would be.
 */
async function startEngineOfVersion(
  version: string,
): Promise<{ endpoint: string; token: string; stop: () => Promise<void> }> {
  const copy = mkdtempSync(join(tmpdir(), 'forkd-engine-'));
  cpSync(join(root, 'dist'), join(copy, 'dist'), { recursive: true });
  for (const dir of ['native', 'recipes']) symlinkSync(join(root, dir), join(copy, dir));
  writeFileSync(join(copy, 'package.json'), JSON.stringify({ name: 'forkd-action', version, type: 'module' }));
  const child = spawn(process.execPath, [join(copy, 'dist/forkd.mjs'), 'serve'], {
    env: home.env(),
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async () => {
    child.kill('SIGTERM');
    await exited;
    rmSync(copy, { recursive: true, force: true });
  };
  const info = join(home.root, 'daemon.json');
  const deadline = Date.now() + 30_000;
  while (!existsSync(info)) {
    if (child.exitCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`the ${version} engine did not start: ${stderr}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const { endpoint, token_file } = JSON.parse(readFileSync(info, 'utf8')) as { endpoint: string; token_file: string };
  return { endpoint, token: readFileSync(token_file, 'utf8').trim(), stop };
}

afterAll(() => {
  expect(home.leftovers()).toEqual(NOTHING_LEFT);
  home.remove();
});

describe('forkd-action/vitest', () => {
  test('the example project: 23 tests in 5 files, 2 workers, each mutating its own Postgres; nothing left', async () => {
    const r = await vitest('examples/vitest-postgres/vitest.config.ts');
    expect(r.output).toMatch(/Test Files {2}5 passed \(5\)/);
    expect(r.output).toMatch(/Tests {2}23 passed \(23\)/);
    expect(r.status).toBe(0);
    // the daemon the run started is gone with its sandboxes, pools and checkpoints
    expect(home.qemuProcesses()).toEqual([]);
    expect(existsSync(join(home.root, 'daemon.json'))).toBe(false);
    expect(home.entries('ledger')).toEqual([]);
    expect(home.entries('snapshots')).toEqual(['pg']); // kept for the next run
  }, 900_000);

  test('forking a snapshot that does not exist fails that test, listing the tags there; the rest runs', async () => {
    const r = await vitest(misconfigured);
    expect(r.status).toBe(1);
    expect(r.output).toContain('forking missing for the forkFrom fixture failed: no snapshot tagged missing');
    expect(r.output).toMatch(/hint: 'known tags: [^']*\bplain\b/); // with the others this file's runs left
    expect(r.output).toMatch(/Tests {2}1 failed \| 1 passed \(2\)/);
    expect(home.qemuProcesses()).toEqual([]);
  }, 300_000);

  test('a fixture option naming no snapshot, or a recipe that does not exist, stops the run at setup naming the ones there are', async () => {
    const tag = await vitest(misconfigured, { FORKD_TEST_SANDBOX: 'missing' });
    expect(tag.status).toBe(1);
    expect(tag.output).toContain(
      `ForkdError: forkd({ sandbox: 'missing' }): no snapshot tagged missing on the engine at unix:${home.root}/forkd.sock`,
    );
    expect(tag.output).toMatch(
      /hint: 'the snapshots there: [^']*\bplain\b[^']*; name one of them, or configure it in forkd\(\{ snapshots \}\)'/,
    );

    const recipe = await vitest(misconfigured, { FORKD_TEST_RECIPE: 'no-such-recipe' });
    expect(recipe.status).toBe(1);
    expect(recipe.output).toContain('ForkdError: no recipe no-such-recipe');
    const recipes = readdirSync(join(root, 'recipes'), { withFileTypes: true }).filter((e) => e.isDirectory());
    expect(recipes.map((e) => e.name)).toContain('postgres');
    expect(recipe.output).toContain(`hint: 'name one of ${recipes.map((e) => e.name).join(', ')}, or give the path`);
    expect(home.qemuProcesses()).toEqual([]);
    expect(existsSync(join(home.root, 'daemon.json'))).toBe(false); // the daemon the failed setup started is gone
  }, 300_000);

  test("the run's sandboxes have its owner and a lease; its teardown removes its own checkpoints, not another run's", async () => {
    const other = 'vitest-ckpt-0123456789ab-000000000000'; // as another run on this engine names them
    await home.engine.snapshot(other, { memoryMiB: 128 });
    try {
      const r = await vitest('test/fixtures/vitest-checkpoint/vitest.config.ts');
      expect(r.output).toMatch(/Tests {2}1 passed \(1\)/);
      expect(r.status).toBe(0);
      const ours = /checkpoint of this run: (vitest-ckpt-[0-9a-f]{12}-[0-9a-f]{12})/.exec(r.output)?.[1];
      expect(ours).toBeDefined();
      expect(home.entries('snapshots')).not.toContain(ours);
      expect(home.entries('snapshots')).toContain(other);
    } finally {
      await home.engine.removeSnapshot(other);
    }
    expect(home.qemuProcesses()).toEqual([]);
  }, 300_000);

  test('an engine of another version stops the run at setup, naming both versions', async () => {
    const engine = await startEngineOfVersion('0.0.1-other');
    try {
      const mismatch = `version mismatch: this client is forkd-action ${packageVersion}, the engine at ${engine.endpoint} is forkd-action 0.0.1-other`;
      const local = await vitest(misconfigured); // found through the state dir's daemon.json
      expect(local.status).toBe(1);
      expect(local.output).toContain(`ForkdError: ${mismatch}`);
      expect(local.output).toContain("code: 'FORKD_ERR_INCOMPATIBLE'");
      expect(local.output).toContain(`"version: ${packageVersion}"), or upgrade one of them`);
      const named = await vitest(misconfigured, { FORKD_ENDPOINT: engine.endpoint, FORKD_TOKEN: engine.token });
      expect(named.status).toBe(1);
      expect(named.output).toContain(`ForkdError: ${mismatch}`);
      expect(named.output).not.toContain('Tests '); // no test ran
    } finally {
      await engine.stop();
    }
    expect(existsSync(join(home.root, 'daemon.json'))).toBe(false);
    expect(home.qemuProcesses()).toEqual([]);
  }, 120_000);

  test("a failing test's error carries its sandbox's console tail (the postgres server log, /dev/console writes)", async () => {
    const r = await vitest('test/fixtures/vitest-failing/vitest.config.ts');
    expect(r.status).toBe(1);
    expect(r.output).toMatch(/Tests {2}4 failed \| 2 passed \(6\)/);
    const failure = (name: string) => r.output.slice(r.output.indexOf(`FAIL  ${name}`)).split('⎯⎯⎯')[0]!;
    const tail = /forkd sandbox sb-[0-9a-f]{12} \(snapshot pg\), console tail:\n/;
    const query = failure('per-test.test.ts > a failing query');
    expect(query).toMatch(tail);
    expect(query).toContain('ERROR:  relation "table_the_test_forgot" does not exist');
    expect(query).toContain('STATEMENT:  select * from table_the_test_forgot');
    expect(failure('per-test.test.ts > a failing assertion')).toContain('marker-from-the-sandbox-fixture');
    expect(failure('per-test.test.ts > a forkFrom child')).toContain('marker-from-fork-from');
    expect(failure('file-scope.test.ts > a later failure')).toContain('marker-from-the-file-scoped-sandbox');
    expect(r.output).not.toContain('marker-of-a-passing-test');
    expect(home.qemuProcesses()).toEqual([]);
  }, 300_000);

  test('a snapshot configured with pull: comes from a pack served over HTTP', async () => {
    await home.engine.snapshot('to-pack', { warmup: 'echo from-a-pack > /tmp/packed' });
    const pack = join(home.root, 'to-pack.forkd.tar.zst');
    await home.hub.pack('to-pack', pack);
    await home.engine.removeSnapshot('to-pack');
    const server = createServer((_req, res) => res.end(readFileSync(pack)));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/to-pack.forkd.tar.zst`;
      const r = await vitest('test/fixtures/vitest-pull/vitest.config.ts', { FORKD_TEST_PACK_URL: url });
      expect(r.output).toMatch(/Tests {2}1 passed \(1\)/);
      expect(r.status).toBe(0);
    } finally {
      server.close();
    }
    expect(home.entries('snapshots')).toContain('pulled');
    await home.engine.removeSnapshot('pulled');
    expect(home.qemuProcesses()).toEqual([]);
  }, 300_000);

  test('an unreachable engine stops the run at setup with the endpoint and a hint', async () => {
    const r = await vitest(misconfigured, {
      FORKD_ENDPOINT: 'unix:/nonexistent/forkd.sock',
      FORKD_TOKEN: 'x'.repeat(32),
    });
    expect(r.status).toBe(1);
    expect(r.output).toContain('cannot reach the forkd daemon at unix:/nonexistent/forkd.sock');
    expect(r.output).toContain('is `forkd serve` running? check FORKD_ENDPOINT');
  }, 120_000);
});
