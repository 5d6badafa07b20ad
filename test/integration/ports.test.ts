import { createServer, type Server } from 'node:net';
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

/** Listens on 127.0.0.1:port (0: any); resolves with the server, or undefined if the port is taken. */
function listen(port: number): Promise<Server | undefined> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(undefined));
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

/** `count` consecutive free host ports, held by listeners the caller closes as it needs. */
async function holdConsecutivePorts(count: number): Promise<Server[]> {
  for (;;) {
    const first = (await listen(0))!;
    const low = (first.address() as { port: number }).port;
    const rest = await Promise.all(Array.from({ length: count - 1 }, (_, i) => listen(low + 1 + i)));
    const held = [first, ...rest].filter((s): s is Server => s !== undefined);
    if (held.length === count) return held;
    await Promise.all(held.map((s) => new Promise((r) => s.close(r))));
  }
}

const portOf = (server: Server) => (server.address() as { port: number }).port;
const close = (server: Server) => new Promise((resolve) => server.close(resolve));

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

  test('a host port that is taken is retried with the next one; none free is a clear error', async () => {
    const held = await holdConsecutivePorts(4);
    const range = `${portOf(held[0]!)}-${portOf(held[3]!)}`;
    process.env.FORKD_PORT_RANGE = range;
    try {
      // two ports free: two children forked at once both find one, whichever they try first
      const [freeA, freeB] = [portOf(held[1]!), portOf(held[2]!)];
      await Promise.all([close(held[1]!), close(held[2]!)]);
      const pair = await fork(2);
      expect(pair.map((c) => c.ports['8080']).sort()).toEqual([freeA, freeB].sort());
      for (const child of pair) expect(await get(child.ports['8080']!)).toBe('from-parent\n');
      // every port taken: the fork fails, and nothing of the child is left
      await expect(engine.fork('web', 1)).rejects.toMatchObject({
        code: 'FORKD_ERR_BUSY',
        message: expect.stringContaining(`no free host port for guest port 8080 in ${range}`),
        hint: expect.stringContaining('FORKD_PORT_RANGE'),
      });
      expect(home.qemuProcesses()).toHaveLength(2);
    } finally {
      delete process.env.FORKD_PORT_RANGE;
      await Promise.all([close(held[0]!), close(held[3]!)]);
    }
  });

  test('bad port lists are refused before anything boots', async () => {
    for (const ports of [[0], [80, 80], [70000]]) {
      await expect(engine.snapshot('bad-ports', { ports })).rejects.toMatchObject({ code: 'FORKD_ERR_BAD_INPUT' });
    }
    expect((await engine.snapshots.list()).map((s) => s.tag)).toEqual(['web']);
  });
});
