import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import type { StartedVm } from '../../src/engine/vmm/vm.js';
import { IsolatedHome, NOTHING_LEFT } from '../helpers/isolated-home.js';

const home = new IsolatedHome();
const engine = home.engine;
const children: StartedVm[] = [];

async function fork(n: number): Promise<StartedVm[]> {
  const forked = await engine.fork('web', n);
  children.push(...forked);
  return forked;
}

async function get(port: number): Promise<string> {
  return (await fetch(`http://127.0.0.1:${port}/`)).text();
}

beforeAll(async () => {
  await engine.snapshot('web', {
    ports: [8080],
    warmup: 'mkdir -p /www && echo from-parent > /www/index.html && httpd -p 8080 -h /www',
  });
});

afterEach(async () => {
  await Promise.all(children.splice(0).map((c) => c.kill()));
});

afterAll(async () => {
  await engine.close();
  await engine.snapshots.remove('web');
  expect(home.leftovers()).toEqual(NOTHING_LEFT);
  home.remove();
});

describe('guest ports on the host', () => {
  test("each child serves the parent's server on a host port of its own", async () => {
    const [a, b] = await fork(2);
    expect(a!.ports['8080']).toBeGreaterThan(0);
    expect(a!.ports['8080']).not.toBe(b!.ports['8080']);
    expect(await get(a!.ports['8080']!)).toBe('from-parent\n');
    expect(await get(b!.ports['8080']!)).toBe('from-parent\n');
  });

  test("a child's changes show only on its own port, and children cannot reach each other", async () => {
    const [a, b] = await fork(2);
    await a!.writeFile('/www/index.html', 'changed-in-a\n');
    expect(await get(a!.ports['8080']!)).toBe('changed-in-a\n');
    expect(await get(b!.ports['8080']!)).toBe('from-parent\n');
    const cross = await a!.exec(
      ['sh', '-c', `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 10.0.2.2 ${b!.ports['8080']}`],
      { timeoutMs: 10_000 },
    );
    expect(cross.exitCode).not.toBe(0);
    expect(cross.stdout.toString()).not.toContain('from-parent');
  });

  test('pooled children get their ports too, and a killed child frees its port', async () => {
    await engine.warmPool('web', 1);
    const [pooled] = await fork(1);
    const port = pooled!.ports['8080']!;
    expect(await get(port)).toBe('from-parent\n');
    await pooled!.kill();
    await expect(fetch(`http://127.0.0.1:${port}/`)).rejects.toThrow();
    await engine.warmPool('web', 0);
  });

  test('bad port lists are refused before anything boots', async () => {
    for (const ports of [[0], [80, 80], [70000]]) {
      await expect(engine.snapshot('bad-ports', { ports })).rejects.toMatchObject({ code: 'FORKD_ERR_BAD_INPUT' });
    }
    expect((await engine.snapshots.list()).map((s) => s.tag)).toEqual(['web']);
  });
});
