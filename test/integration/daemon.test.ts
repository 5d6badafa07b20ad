import { existsSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test, vi } from 'vitest';
import { openApiDocument } from '../../src/api/openapi.js';
import type { Controller } from '../../src/client/controller.js';
import { Daemon } from '../../src/server/daemon.js';
import { checked, contractController, contractViolation } from '../helpers/api-contract.js';
import { IsolatedHome, NOTHING_LEFT } from '../helpers/isolated-home.js';

const home = new IsolatedHome();
let daemon: Daemon;
let client: Controller;

/** A raw request over the daemon's socket: the exact path and headers we give, nothing normalised; its reply checked against the schema. */
function raw(
  method: string,
  path: string,
  headers: Record<string, string> = {},
  body?: string,
): Promise<{ status: number; json: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ socketPath: daemon.endpoint.slice('unix:'.length), method, path, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks);
        const violation = contractViolation(method, path, res.statusCode ?? 0, res.headers['content-type'], body);
        if (violation) return reject(new Error(`API contract: ${violation}`));
        const text = body.toString();
        resolve({
          status: res.statusCode ?? 0,
          json: text.startsWith('{') ? (JSON.parse(text) as Record<string, unknown>) : {},
        });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

const auth = () => ({ authorization: `Bearer ${daemon.token}` });

/** A state dir of its own (one daemon per state dir) that sees this one's snapshots. */
function neighbourHome(): IsolatedHome {
  const neighbour = new IsolatedHome();
  rmSync(join(neighbour.root, 'snapshots'), { recursive: true, force: true });
  symlinkSync(join(home.root, 'snapshots'), join(neighbour.root, 'snapshots'));
  return neighbour;
}

beforeAll(async () => {
  daemon = await Daemon.start({ paths: home.paths });
  client = contractController({ endpoint: daemon.endpoint, token: daemon.token });
  await client.createSnapshot('base', { warmup: 'echo from-parent > /tmp/parent' });
});

afterAll(async () => {
  expect(checked.replies).toBeGreaterThan(100); // every reply above went through the contract check
  await client.close();
  await daemon.close();
  expect(home.qemuProcesses()).toEqual([]);
  expect(home.entries('run')).toEqual([]);
  expect(home.entries('ledger')).toEqual([]);
  expect(readFileSync(join(home.root, 'audit.log'), 'utf8')).not.toContain(daemon.token);
  home.remove();
});

describe('auth', () => {
  test('only /healthz itself is open', async () => {
    expect(await raw('GET', '/healthz')).toEqual({ status: 200, json: { ok: true } });
    for (const path of [
      '/healthz?x',
      '/healthz/../v1/sandboxes',
      '/HEALTHZ',
      '/healthz%2F',
      '/version',
      '/v1/snapshots',
    ]) {
      expect((await raw('GET', path)).status, path).toBe(401);
    }
  });

  test('missing, malformed and wrong tokens are 401; the right one passes', async () => {
    expect(await raw('GET', '/version')).toMatchObject({ status: 401, json: { error: 'missing bearer token' } });
    expect(await raw('GET', '/version', { authorization: daemon.token })).toMatchObject({
      status: 401,
      json: { error: 'missing bearer token' },
    });
    expect(await raw('GET', '/version', { authorization: 'Bearer nope' })).toMatchObject({
      status: 401,
      json: { error: 'invalid bearer token' },
    });
    expect(await raw('GET', '/version', { authorization: `Bearer ${daemon.token}x` })).toMatchObject({ status: 401 });
    expect(await raw('GET', '/version', auth())).toMatchObject({ status: 200, json: { api: 'v1' } });
    // the scheme is case-insensitive (RFC 7235)
    expect(await raw('GET', '/version', { authorization: `bearer ${daemon.token}` })).toMatchObject({ status: 200 });
    expect(await raw('GET', '/version', { authorization: `BEARER ${daemon.token}` })).toMatchObject({ status: 200 });
  });

  test('GET /v1/openapi.json serves the OpenAPI 3.1 document, behind the token like every route', async () => {
    expect((await raw('GET', '/v1/openapi.json')).status).toBe(401);
    expect(await raw('GET', '/v1/openapi.json', auth())).toEqual({ status: 200, json: openApiDocument() });
  });
});

describe('client', () => {
  test('finds the daemon through FORKD_ENDPOINT and FORKD_TOKEN', async () => {
    vi.stubEnv('FORKD_ENDPOINT', daemon.endpoint);
    vi.stubEnv('FORKD_TOKEN', daemon.token);
    const fromEnv = contractController({});
    try {
      expect(fromEnv.endpoint).toBe(daemon.endpoint);
      expect((await fromEnv.listSnapshots()).map((s) => s.tag)).toEqual(['base']);
    } finally {
      await fromEnv.close();
    }
    vi.stubEnv('FORKD_ENDPOINT', 'unix:/nonexistent/forkd.sock');
    const lost = contractController({});
    await expect(lost.version()).rejects.toMatchObject({
      code: 'FORKD_ERR_UNREACHABLE',
      hint: expect.stringContaining('forkd serve'),
    });
    await lost.close();
  });
});

describe('snapshots', () => {
  test('list, info, and a duplicate or bad create', async () => {
    expect((await client.listSnapshots()).map((s) => s.tag)).toEqual(['base']);
    const info = await client.snapshotInfo('base');
    expect(info).toMatchObject({
      tag: 'base',
      memory_mib: 256,
      memory_logical_bytes: 256 * 1024 * 1024,
      ancestors: [],
      dependents: [],
      pool_size: 0,
    });
    expect(info.memory_physical_bytes).toBeLessThan(info.memory_logical_bytes);
    await expect(client.createSnapshot('base')).rejects.toMatchObject({ status: 409 });
    await expect(client.snapshotInfo('nope')).rejects.toMatchObject({ status: 404, hint: 'known tags: base' });
    expect((await raw('POST', '/v1/snapshots', auth(), '{"tag": "../x"}')).status).toBe(400);
    expect(await raw('POST', '/v1/snapshots', auth(), '{"tag": "ok", "colour": 1}')).toMatchObject({
      status: 400,
      json: { error: 'unknown field: colour' },
    });
    expect(await raw('POST', '/v1/snapshots', auth(), '{"tag": 7}')).toMatchObject({
      status: 400,
      json: { error: '"tag" must be a string' },
    });
    expect(await raw('POST', '/v1/snapshots', auth(), '{nope')).toMatchObject({
      status: 400,
      json: { error: 'request body is not valid JSON' },
    });
    expect(
      (await raw('POST', '/v1/snapshots', auth(), JSON.stringify({ tag: 'big', warmup: 'x'.repeat(2 * 1024 * 1024) })))
        .status,
    ).toBe(413);
    expect((await raw('GET', '/v1/snapshots/..%2Fetc', auth())).status).toBe(400);
    expect((await raw('PATCH', '/v1/snapshots', auth())).status).toBe(405);
    expect((await raw('GET', '/v2/everything', auth())).status).toBe(404);
    expect((await client.listSnapshots()).map((s) => s.tag)).toEqual(['base']);
  });

  test('create and delete', async () => {
    const created = await client.createSnapshot('second', { memoryMiB: 128 });
    expect(created).toMatchObject({ tag: 'second', memory_mib: 128 });
    expect(created.timings.save_ms).toBeGreaterThan(0);
    await client.deleteSnapshot('second');
    await expect(client.deleteSnapshot('second')).rejects.toMatchObject({ status: 404 });
  });
});

describe('sandboxes', () => {
  test('fork, exec, files, ping, delete', async () => {
    const [a, b] = await client.createSandboxes('base', 2);
    expect(a!.info).toMatchObject({ snapshot: 'base', id: expect.stringMatching(/^sb-[0-9a-f]{12}$/) });
    expect((await client.listSandboxes()).map((s) => s.id).sort()).toEqual([a!.id, b!.id].sort());
    expect(await client.getSandbox(a!.id)).toEqual(a!.info);

    const r = await a!.exec(['sh', '-c', 'cat /tmp/parent; echo err >&2; exit 4']);
    expect([r.exitCode, r.stdout.toString(), r.stderr.toString()]).toEqual([4, 'from-parent\n', 'err\n']);
    expect((await b!.exec('echo $X', { env: { X: 'y' } })).stdout.toString()).toBe('y\n');
    const missing = await a!.exec(['no-such-binary']);
    expect(missing.exitCode).toBe(127);

    const bytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    await a!.writeFile('/tmp/bytes', bytes, { mode: 0o600 });
    expect((await a!.readFile('/tmp/bytes')).equals(bytes)).toBe(true);
    await expect(b!.readFile('/tmp/bytes')).rejects.toMatchObject({ status: 422, code: 'FORKD_ERR_AGENT' });
    expect(await client.ping(a!.id)).toMatchObject({ pong: true, version: '1' });

    await a!.exec('for i in 1 2 3; do echo console-line-$i > /dev/console; done');
    expect(await a!.console(2)).toBe('console-line-2\nconsole-line-3');
    expect(await a!.console()).toContain('console-line-1\nconsole-line-2\nconsole-line-3');
    expect(await b!.console()).not.toContain('console-line'); // each child has its own console

    await a!.kill();
    await expect(client.getSandbox(a!.id)).rejects.toMatchObject({ status: 404 });
    await expect(a!.exec(['true'])).rejects.toMatchObject({ status: 404 });
    await b!.kill();
    expect(await client.listSandboxes()).toEqual([]);
  });

  test('await using deletes the sandbox at scope exit', async () => {
    let id = '';
    {
      await using sb = await client.createSandbox('base');
      id = sb.id;
      expect((await sb.exec(['hostname'])).exitCode).toBe(0);
    }
    await expect(client.getSandbox(id)).rejects.toMatchObject({ status: 404 });
  });

  test('sandboxes report the host ports of their exposed guest ports', async () => {
    await client.createSnapshot('web', {
      ports: [8080],
      warmup: 'mkdir -p /www && echo hi > /www/index.html && httpd -p 8080 -h /www',
    });
    try {
      await using sb = await client.createSandbox('web');
      const port = sb.info.ports['8080']!;
      expect(port).toBeGreaterThan(0);
      expect(await (await fetch(`http://127.0.0.1:${port}/`)).text()).toBe('hi\n');
      expect((await client.getSandbox(sb.id)).ports).toEqual({ '8080': port });
      expect((await client.snapshotInfo('web')).ports).toEqual([8080]);
    } finally {
      await client.deleteSnapshot('web');
    }
    expect((await raw('POST', '/v1/snapshots', auth(), '{"tag": "p", "ports": [0]}')).status).toBe(400);
  });

  test('bad requests are 4xx and change nothing', async () => {
    const before = await client.listSandboxes();
    expect((await raw('POST', '/v1/sandboxes', auth(), '{"snapshot": "base", "n": 0}')).status).toBe(400);
    expect((await raw('POST', '/v1/sandboxes', auth(), '{"snapshot": "base", "n": 100000}')).status).toBe(400);
    expect((await raw('POST', '/v1/sandboxes', auth(), '{"snapshot": "base", "n": "2"}')).status).toBe(400);
    expect((await raw('POST', '/v1/sandboxes', auth(), '{"snapshot": "ghost"}')).status).toBe(404);
    expect((await raw('GET', '/v1/sandboxes/..%2F..%2Fetc', auth())).status).toBe(400);
    expect((await raw('POST', '/v1/sandboxes/sb-000000000000/exec', auth(), '{"argv": ["true"]}')).status).toBe(404);
    const sb = await client.createSandbox('base');
    expect((await raw('POST', `/v1/sandboxes/${sb.id}/exec`, auth(), '{"argv": ["a"], "shell": "b"}')).status).toBe(
      400,
    );
    expect((await raw('POST', `/v1/sandboxes/${sb.id}/exec`, auth(), '{"argv": []}')).status).toBe(400);
    expect((await raw('GET', `/v1/sandboxes/${sb.id}/files?path=relative`, auth())).status).toBe(400);
    for (const lines of ['0', '1001', 'x', '2.5']) {
      expect((await raw('GET', `/v1/sandboxes/${sb.id}/console?lines=${lines}`, auth())).status).toBe(400);
    }
    expect((await raw('GET', '/v1/sandboxes/sb-000000000000/console', auth())).status).toBe(404);
    for (const [body, message, hint] of [
      ['{"snapshot": "base", "ttl_s": 0}', '"ttl_s" must be an integer from 1 to 86400', 'lease'],
      ['{"snapshot": "base", "ttl_s": 86401}', '"ttl_s" must be an integer from 1 to 86400', 'lease'],
      ['{"snapshot": "base", "owner": {"label": "../x"}}', '"owner.label" must be a string matching', 'owner label'],
      [
        '{"snapshot": "base", "owner": {"label": "a", "uid": 1}}',
        'unknown field: owner.uid',
        'allowed in owner: label, pid',
      ],
      ['{"snapshot": ["base"]}', '"snapshot" must be a string', 'snapshot tag'],
    ] as const) {
      expect(await raw('POST', '/v1/sandboxes', auth(), body)).toMatchObject({
        status: 400,
        json: {
          code: 'FORKD_ERR_BAD_INPUT',
          error: expect.stringContaining(message),
          hint: expect.stringContaining(hint),
        },
      });
    }
    expect(
      await raw('POST', `/v1/sandboxes/${sb.id}/exec`, auth(), '{"shell": "true", "timeout_ms": "5"}'),
    ).toMatchObject({ status: 400, json: { error: '"timeout_ms" must be an integer from 0 to 86400000' } });
    for (const body of ['{"shell": "sleep 1", "timeout_ms": 2147483648}', '{"shell": "true", "max_output": 4194305}']) {
      expect(await raw('POST', `/v1/sandboxes/${sb.id}/exec`, auth(), body)).toMatchObject({
        status: 400,
        json: { error: expect.stringMatching(/^"(timeout_ms|max_output)" must be an integer from 0 to \d+$/) },
      });
    }
    expect(await raw('POST', `/v1/sandboxes/${sb.id}/eval`, auth(), '{"code": "1", "timeout_ms": 1e10}')).toMatchObject(
      {
        status: 400,
        json: { error: '"timeout_ms" must be an integer from 1 to 86400000' },
      },
    );
    // routes that declare no query or body refuse one instead of ignoring it
    expect(await raw('GET', `/v1/sandboxes?snapshot=base`, auth())).toMatchObject({
      status: 400,
      json: { error: 'unknown field: snapshot', hint: 'the query takes no fields' },
    });
    const unwanted = '{"force": true}'; // Node sends a DELETE body only with its length
    expect(
      await raw('DELETE', `/v1/sandboxes/${sb.id}`, { ...auth(), 'content-length': String(unwanted.length) }, unwanted),
    ).toMatchObject({
      status: 400,
      json: { error: 'unknown field: force' },
    });
    expect((await raw('GET', '/healthz')).status).toBe(200);
    expect(await raw('POST', `/v1/sandboxes/${sb.id}/ping`, auth(), '{"x": 1}')).toMatchObject({
      status: 400,
      json: { error: 'unknown field: x' },
    });
    expect(await raw('GET', `/v1/sandboxes/${sb.id}/files?path=/tmp/x&max_bytes=0`, auth())).toMatchObject({
      status: 400,
      json: { error: '"max_bytes" must be an integer from 1 to 67108864' },
    });
    expect((await raw('POST', '/v1/sandboxes', auth(), JSON.stringify({ snapshot: 'x'.repeat(2 << 20) }))).status).toBe(
      413,
    );
    await sb.kill();
    expect(await client.listSandboxes()).toEqual(before);
  });
});

describe('pull', () => {
  test('a daemon started without --allow-http-pull refuses plain http:// packs, with a hint', async () => {
    expect(
      await raw('POST', '/v1/snapshots/pull', auth(), '{"ref": "http://127.0.0.1:1/internal.forkd.tar.zst"}'),
    ).toMatchObject({
      status: 400,
      json: {
        code: 'FORKD_ERR_BAD_INPUT',
        error: expect.stringContaining('only https:// URLs are pulled'),
        hint: expect.stringContaining('--allow-http-pull'),
      },
    });
    expect(await raw('POST', '/v1/snapshots/pull', auth(), '{"ref": "acme/x", "colour": 1}')).toMatchObject({
      status: 400,
      json: { error: 'unknown field: colour', hint: 'allowed: ref, tag, force' },
    });
  });
});

describe('branch', () => {
  test('POST /branch: 201 with the pause and bytes; the branch forks; wait: false answers 202 then becomes ready', async () => {
    await using sb = await client.createSandbox('base');
    await sb.exec(['sh', '-c', 'echo branched > /tmp/mark']);
    const r = await sb.branch('api-branch', { mode: 'diff' });
    expect(r).toMatchObject({ tag: 'api-branch', status: 'ready', mode: 'diff', parent: 'base', depth: 1 });
    expect(r.pause_ms).toBeGreaterThan(0);
    expect(r.bytes_written).toBeGreaterThan(0);
    const detail = await client.getSnapshot('base');
    expect(detail).toMatchObject({ dependents: ['api-branch'] });

    const pending = await sb.branch('api-nowait', { wait: false });
    expect(pending).toMatchObject({ tag: 'api-nowait', status: 'writing', mode: 'live' });
    await vi.waitFor(async () => expect(await client.getSnapshot('api-nowait')).toMatchObject({ status: 'ready' }), {
      timeout: 30_000,
      interval: 100,
    });
    for (const tag of ['api-branch', 'api-nowait']) {
      await using child = await client.createSandbox(tag);
      expect((await child.exec(['cat', '/tmp/mark'])).stdout.toString()).toBe('branched\n');
    }
    await expect(client.deleteSnapshot('base')).rejects.toMatchObject({
      status: 409,
      message: expect.stringContaining('has dependents: api-branch'),
    });
    await client.deleteSnapshot('api-branch');
    await client.deleteSnapshot('api-nowait');
  });

  test('bad branches are 4xx and leave nothing', async () => {
    await using sb = await client.createSandbox('base');
    const bad = async (id: string, body: string) =>
      (await raw('POST', `/v1/sandboxes/${id}/branch`, auth(), body)).status;
    expect(await bad('sb-000000000000', '{"tag":"x"}')).toBe(404);
    expect(await bad(sb.id, '{"tag":"../x"}')).toBe(400);
    expect(await bad(sb.id, '{"tag":"base"}')).toBe(409);
    expect(await bad(sb.id, '{"tag":"x","mode":"partial"}')).toBe(400);
    expect(await bad(sb.id, '{"tag":"x","mode":"full","wait":false}')).toBe(400);
    expect(await bad(sb.id, '{"tag":"x","extra":1}')).toBe(400);
    expect((await client.listSnapshots()).map((s) => s.tag)).toEqual(['base']);
  });
});

describe('operations', () => {
  test('metrics count forks and live sandboxes', async () => {
    const sb = await client.createSandbox('base');
    const text = await client.metrics();
    expect(text).toMatch(/^forkd_sandboxes_active 1$/m);
    expect(Number(/^forkd_forks_total (\d+)$/m.exec(text)?.[1])).toBeGreaterThan(0);
    expect(text).toMatch(/^forkd_fork_latency_ms_bucket\{le="\+Inf"\} \d+$/m);
    await sb.kill();
  });

  test('a full heavy-operation cap answers 503, a second operation on one tag 409', async () => {
    const cappedHome = neighbourHome();
    const capped = await Daemon.start({ paths: cappedHome.paths, maxHeavy: 1 });
    const c = contractController({ endpoint: capped.endpoint, token: capped.token });
    try {
      const results = await Promise.allSettled([c.createSnapshot('cap-a'), c.createSnapshot('cap-b')]);
      expect(
        results.map((r) => (r.status === 'fulfilled' ? 201 : (r.reason as { status: number }).status)).sort(),
      ).toEqual([201, 503]);
      const same = await Promise.allSettled([client.createSnapshot('cap-c'), client.createSnapshot('cap-c')]);
      expect(
        same.map((r) => (r.status === 'fulfilled' ? 201 : (r.reason as { status: number }).status)).sort(),
      ).toEqual([201, 409]);
      for (const tag of ['cap-a', 'cap-b', 'cap-c']) await client.deleteSnapshot(tag).catch(() => {});
    } finally {
      await c.close();
      await capped.close();
      cappedHome.remove();
    }
  });

  test('every request, accepted or rejected, has an audit line', async () => {
    await raw('GET', '/v1/sandboxes');
    await client.listSandboxes();
    const lines = readFileSync(join(home.root, 'audit.log'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.at(-2)).toMatchObject({ method: 'GET', path: '/v1/sandboxes', status: 401, outcome: 'rejected' });
    expect(lines.at(-1)).toMatchObject({ method: 'GET', path: '/v1/sandboxes', status: 200, outcome: 'ok' });
    expect(typeof lines.at(-1)!.latency_ms).toBe('number');
  });

  test('serves loopback TCP too, and refuses other addresses without a managed token', async () => {
    const tcpHome = neighbourHome();
    const tcp = await Daemon.start({ paths: tcpHome.paths, listen: '127.0.0.1:0' });
    const c = contractController({ endpoint: tcp.endpoint, token: tcp.token });
    try {
      expect(tcp.endpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect(await c.health()).toEqual({ ok: true });
      expect((await c.listSnapshots()).map((s) => s.tag)).toContain('base');
      const stranger = contractController({ endpoint: tcp.endpoint, token: 'f'.repeat(32) });
      await expect(stranger.version()).rejects.toMatchObject({ status: 401 });
      await stranger.close();
    } finally {
      await c.close();
      await tcp.close();
      tcpHome.remove();
    }
    await expect(Daemon.start({ paths: home.paths, listen: '0.0.0.0:0' })).rejects.toMatchObject({
      code: 'FORKD_ERR_BAD_INPUT',
      message: expect.stringContaining('non-loopback 0.0.0.0 without --token-file'),
    });
  });

  test('close kills every sandbox and removes the socket', async () => {
    const otherHome = neighbourHome();
    const other = await Daemon.start({ paths: otherHome.paths });
    const c = contractController({ endpoint: other.endpoint, token: other.token });
    const kids = await c.createSandboxes('base', 2);
    expect(otherHome.qemuProcesses()).toHaveLength(2);
    await c.close();
    await other.close();
    for (const kid of kids) expect(() => process.kill(kid.info.pid, 0)).toThrow();
    expect(otherHome.entries('run')).toEqual(NOTHING_LEFT.run);
    expect(existsSync(join(otherHome.root, 'forkd.sock'))).toBe(false);
    otherHome.remove();
  });
});
