import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { Controller, Sandbox } from '../../src/client/controller.js';
import type { StartedVm } from '../../src/engine/vmm/vm.js';
import { Daemon } from '../../src/server/daemon.js';
import { checked, contractController } from '../helpers/api-contract.js';
import { IsolatedHome, NOTHING_LEFT } from '../helpers/isolated-home.js';

const home = new IsolatedHome();
const engine = home.engine;
const cli = join(import.meta.dirname, '../../bin/forkd.js');
let daemon: Daemon;
let client: Controller;

/** The guest's interpreter processes: the eval bridge must not add any per call. */
async function interpreters(vm: StartedVm, name: string): Promise<number> {
  const r = await vm.exec(`cat /proc/[0-9]*/comm | grep -cx ${name} || true`);
  return Number(r.stdout.toString().trim());
}

beforeAll(async () => {
  daemon = await Daemon.start({ paths: home.paths });
  client = contractController({ endpoint: daemon.endpoint, token: daemon.token });
  // The images are built once and cached (mmdebstrap of python3-numpy / nodejs).
  await Promise.all([
    engine.snapshot('py', { recipe: 'python-numpy' }),
    client.createSnapshot('js', { recipe: 'nodejs' }),
    engine.snapshot('plain'),
  ]);
}, 900_000);

afterAll(async () => {
  expect(checked.replies).toBeGreaterThan(10); // the replies above kept the schema
  await client.close();
  await daemon.close();
  for (const tag of ['py', 'js', 'plain']) await engine.snapshots.remove(tag);
  expect(home.leftovers()).toEqual(NOTHING_LEFT);
  home.remove();
});

describe('python-numpy: a warm interpreter behind eval', () => {
  let a: StartedVm;
  let b: StartedVm;
  beforeAll(async () => {
    [a, b] = (await engine.fork('py', 2)) as [StartedVm, StartedVm];
  });
  afterAll(async () => {
    await Promise.all([a.kill(), b.kill()]);
  });

  test('numpy answers from the warm interpreter; no Python starts per call', async () => {
    expect(await interpreters(a, 'python3')).toBe(1);
    const r = await a.eval('numpy.zeros(5).sum()');
    expect(r).toMatchObject({ ok: true, value: 0, repr: '0.0', output: '' });
    const pids = new Set<unknown>();
    for (let i = 0; i < 5; i++) {
      const p = await a.eval('import os; os.getpid()');
      expect(p.ok).toBe(true);
      pids.add(p.ok && p.value);
    }
    expect(pids.size).toBe(1);
    expect(await interpreters(a, 'python3')).toBe(1);
    expect(await a.eval('np.arange(4) * 2')).toMatchObject({
      ok: true,
      value: [0, 2, 4, 6],
      repr: 'array([0, 2, 4, 6])',
    });
  });

  test('statements run like a REPL cell: printed output and the last expression come back', async () => {
    expect(
      await a.eval('total = 0\nfor i in range(4):\n    total += i\nprint("sum", total)\ntotal * 10'),
    ).toMatchObject({ ok: true, value: 60, output: 'sum 6\n' });
    expect(await a.eval('y = 1')).toMatchObject({ ok: true, value: null, repr: null });
  });

  test("an error comes back with the guest's traceback", async () => {
    const r = await a.eval('def f():\n    return 1 / 0\nf()');
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.error).toMatchObject({ type: 'ZeroDivisionError', message: 'division by zero' });
    expect(r.error.stack).toMatch(/^Traceback \(most recent call last\):\n {2}File "<eval>", line 3/);
    expect(r.error.stack).toContain('File "<eval>", line 2, in f');
    expect(r.error.stack).not.toContain('eval_server.py');
    expect(await a.eval('1 +')).toMatchObject({ ok: false, error: { type: 'SyntaxError' } });
  });

  test("each child's interpreter state is its own", async () => {
    await a.eval('secret = "only-in-a"');
    expect(await a.eval('secret')).toMatchObject({ ok: true, value: 'only-in-a' });
    expect(await b.eval('secret')).toMatchObject({ ok: false, error: { type: 'NameError' } });
  });
});

describe('nodejs: a warm Node behind eval, through the daemon and the CLI', () => {
  let sandbox: Sandbox;
  /** The CLI as a user runs it; asynchronous, since the daemon it talks to lives in this process. */
  const forkd = (args: string[], input = '') =>
    new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve, reject) => {
      const child = spawn(process.execPath, [cli, ...args], {
        env: home.env({ FORKD_ENDPOINT: daemon.endpoint, FORKD_TOKEN: daemon.token }),
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
      child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
      child.on('error', reject);
      child.on('close', (status) => resolve({ status, stdout, stderr }));
      child.stdin.end(input);
    });
  beforeAll(async () => {
    sandbox = await client.createSandbox('js');
  });
  afterAll(async () => {
    await sandbox[Symbol.asyncDispose]();
  });

  test('values, awaited promises and console output come back; the same process answers', async () => {
    expect(await sandbox.eval('1 + 2')).toMatchObject({ ok: true, value: 3, repr: '3' });
    expect(await sandbox.eval('Promise.resolve({ a: [1, 2] })')).toMatchObject({
      ok: true,
      value: { a: [1, 2] },
    });
    expect(await sandbox.eval('console.log("hi", 7); globalThis.kept = 41; kept + 1')).toMatchObject({
      ok: true,
      value: 42,
      output: 'hi 7\n',
    });
    const first = await sandbox.eval('process.pid');
    const second = await sandbox.eval('kept; process.pid');
    expect(first.ok && second.ok && first.value === second.value).toBe(true);
  });

  test("an error comes back with the guest's stack", async () => {
    const r = await sandbox.eval('function f() { return null.foo }\nf()');
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.error.type).toBe('TypeError');
    expect(r.error.message).toMatch(/Cannot read properties of null/);
    expect(r.error.stack).toMatch(/at f \(<eval>:1:/);
    expect(r.error.stack).not.toContain('/opt/forkd/');
  });

  test('forkd eval prints the value, or the stack and exits 1; --json and stdin work', async () => {
    const ok = await forkd(['eval', sandbox.id, '--', '[1, 2, 3].map((x) => x * 2)']);
    expect(ok.stdout).toBe('[ 2, 4, 6 ]\n');
    expect(ok.status).toBe(0);
    const failed = await forkd(['eval', sandbox.id, '--', 'throw new RangeError("nope")']);
    expect(failed.status).toBe(1);
    expect(failed.stderr).toMatch(/RangeError: nope\n {4}at <eval>:1:7\n$/);
    const json = await forkd(['eval', sandbox.id, '--json'], '6 * 7');
    expect(JSON.parse(json.stdout)).toMatchObject({ ok: true, value: 42 });
  });
});

test('a sandbox without an eval bridge gets a clear error with a hint, over the API and in the engine', async () => {
  const [plain] = await engine.fork('plain', 1);
  try {
    await expect(plain!.eval('1')).rejects.toMatchObject({ code: 'FORKD_ERR_NO_EVAL', hint: /python-numpy/ });
  } finally {
    await plain!.kill();
  }
  await using sandbox = await client.createSandbox('plain');
  await expect(sandbox.eval('1')).rejects.toMatchObject({ code: 'FORKD_ERR_NO_EVAL', status: 422 });
  await expect(client.eval(sandbox.id, 42 as unknown as string)).rejects.toMatchObject({ status: 400 });
});
