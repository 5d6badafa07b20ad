import type { IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';
import { describe, expect, test } from 'vitest';
import { API } from '../../src/api/routes.js';
import * as S from '../../src/api/schemas.js';
import { requireHttps } from '../../src/hub/pull.js';
import { JSON_BODY_LIMIT, readJsonBody } from '../../src/server/body.js';
import { Router } from '../../src/server/router.js';

/** A request whose body is `text`, as the daemon's handler receives it. */
const request = (text: string) =>
  Object.assign(Readable.from([Buffer.from(text)]), { headers: {} }) as unknown as IncomingMessage;

const refused = (schema: Parameters<typeof readJsonBody>[1], body: unknown) =>
  expect(readJsonBody(request(JSON.stringify(body)), schema)).rejects;

describe('request bodies against the schema', () => {
  test('a matching body passes, typed; an empty body is {}', async () => {
    const body = { snapshot: 'base', n: 2, owner: { label: 'pytest:gw0', pid: 4242 }, ttl_s: 30 };
    expect(await readJsonBody(request(JSON.stringify(body)), S.CreateSandboxesRequest)).toEqual(body);
    expect(await readJsonBody(request(''), S.EmptyRequest)).toEqual({});
  });

  test('unknown fields are refused by name, with the allowed ones as the hint', async () => {
    await refused(S.CreateSnapshotRequest, { tag: 'ok', colour: 1, size: 2 }).toMatchObject({
      code: 'FORKD_ERR_BAD_INPUT',
      message: 'unknown fields: colour, size',
      hint: 'allowed: tag, recipe, recipe_files, memory_mib, warmup, ports',
    });
    await refused(S.CreateSandboxesRequest, { snapshot: 'base', owner: { label: 'a', uid: 1 } }).toMatchObject({
      message: 'unknown field: owner.uid',
      hint: 'allowed in owner: label, pid',
    });
    await refused(S.EmptyRequest, { x: 1 }).toMatchObject({ message: 'unknown field: x' });
  });

  test('wrong types and ranges name the field and what it allows', async () => {
    await refused(S.CreateSnapshotRequest, { tag: 7 }).toMatchObject({ message: '"tag" must be a string' });
    await refused(S.CreateSandboxesRequest, { snapshot: 'base', n: '2' }).toMatchObject({
      message: '"n" must be an integer from 1 to 256',
    });
    await refused(S.BranchRequest, { tag: 'x', mode: 'partial' }).toMatchObject({
      message: '"mode" must be one of "full", "diff", "live"',
    });
    await refused(S.ExecRequest, { shell: 'true', env: { A: 1 } }).toMatchObject({
      message: '"env.A" must be a string',
    });
    await refused(S.CreateSnapshotRequest, { tag: 'p', ports: [0] }).toMatchObject({
      message: '"ports[0]" must be an integer from 1 to 65535',
    });
    await refused(S.CreateSnapshotRequest, { tag: 'p', recipe: '../x' }).toMatchObject({
      message: '"recipe" must be a string matching ^[^/]+$',
      hint: expect.stringContaining('not a path'),
    });
  });

  test('a lease of 0 or over a day, or a bad owner label, is refused with a hint', async () => {
    for (const ttl of [0, 86_401, 1.5]) {
      await refused(S.CreateSandboxesRequest, { snapshot: 'base', ttl_s: ttl }).toMatchObject({
        code: 'FORKD_ERR_BAD_INPUT',
        message: '"ttl_s" must be an integer from 1 to 86400',
        hint: expect.stringContaining('lease'),
      });
    }
    await refused(S.CreateSandboxesRequest, { snapshot: 'base', owner: { label: '-x' } }).toMatchObject({
      message: expect.stringContaining('"owner.label" must be a string matching'),
      hint: expect.stringContaining('owner label'),
    });
    await refused(S.CreateSandboxesRequest, { snapshot: 'base', owner: { label: 'a', pid: 0 } }).toMatchObject({
      message: '"owner.pid" must be an integer >= 1',
    });
  });

  test('exec and eval timeouts are at most a day (a timer of 2^31 ms fires at once); max_output at most 4 MiB', async () => {
    for (const timeout_ms of [2 ** 31, 86_400_001]) {
      await refused(S.ExecRequest, { shell: 'true', timeout_ms }).toMatchObject({
        message: '"timeout_ms" must be an integer from 0 to 86400000',
        hint: expect.stringContaining('at most a day'),
      });
      await refused(S.EvalRequest, { code: '1', timeout_ms }).toMatchObject({
        message: '"timeout_ms" must be an integer from 1 to 86400000',
      });
    }
    await refused(S.ExecRequest, { shell: 'true', max_output: 4 * 1024 * 1024 + 1 }).toMatchObject({
      message: '"max_output" must be an integer from 0 to 4194304',
      hint: expect.stringContaining('max 4 MiB'),
    });
    const atTheBounds = { shell: 'true', timeout_ms: 86_400_000, max_output: 4 * 1024 * 1024 };
    expect(await readJsonBody(request(JSON.stringify(atTheBounds)), S.ExecRequest)).toEqual(atTheBounds);
  });

  test('missing fields, and exactly one of argv or shell', async () => {
    await refused(S.CreateSandboxesRequest, { n: 1 }).toMatchObject({ message: 'the body needs "snapshot"' });
    await refused(S.ExecRequest, { argv: ['a'], shell: 'b' }).toMatchObject({
      message: 'the body needs exactly one of "argv", "shell"',
    });
    await refused(S.ExecRequest, {}).toMatchObject({ message: 'the body needs exactly one of "argv", "shell"' });
    await refused(S.ExecRequest, { argv: [] }).toMatchObject({
      message: '"argv" must be a non-empty array of strings',
    });
  });

  test('not JSON, not an object, or over the limit', async () => {
    await expect(readJsonBody(request('{nope'), S.EmptyRequest)).rejects.toMatchObject({
      code: 'FORKD_ERR_BAD_INPUT',
      message: 'request body is not valid JSON',
    });
    await refused(S.PullRequest, ['acme/x']).toMatchObject({ message: 'the body must be a JSON object' });
    const big = JSON.stringify({ tag: 'big', warmup: 'x'.repeat(JSON_BODY_LIMIT) });
    await expect(readJsonBody(request(big), S.CreateSnapshotRequest)).rejects.toMatchObject({
      code: 'FORKD_ERR_FRAME_TOO_LARGE',
      message: `request body is over the ${JSON_BODY_LIMIT} byte limit`,
    });
  });
});

describe('routes that declare no query or body', () => {
  const router = new Router();
  let handled = 0;
  router.on(API.listSandboxes, () => Promise.resolve({ status: 200, json: [handled++] }));
  const call = (query: string, body = '') =>
    router.dispatch(router.match('GET', '/v1/sandboxes') as never, request(body), new URLSearchParams(query));

  test('refuse a query parameter or a body instead of ignoring it', async () => {
    await expect(call('snapshot=base')).rejects.toMatchObject({
      code: 'FORKD_ERR_BAD_INPUT',
      message: 'unknown field: snapshot',
      hint: 'the query takes no fields',
    });
    await expect(call('', '{"all": true}')).rejects.toMatchObject({ message: 'unknown field: all' });
    await expect(call('', 'all')).rejects.toMatchObject({ message: 'request body is not valid JSON' });
    expect(handled).toBe(0);
    expect(await call('')).toEqual({ status: 200, json: [0] });
    expect(await call('', '{}')).toEqual({ status: 200, json: [1] });
  });
});

describe('pulls through the daemon', () => {
  test('fetch https:// only: a plain http ref or registry entry is refused with a hint', () => {
    const url = 'http://10.0.0.1/x.forkd.tar.zst';
    expect(() => requireHttps({ ref: url, url })).toThrow(
      expect.objectContaining({
        code: 'FORKD_ERR_BAD_INPUT',
        message: `refusing to pull ${url}: only https:// URLs are pulled`,
        hint: expect.stringContaining('--allow-http-pull'),
      }),
    );
    expect(() => requireHttps({ ref: 'acme/x@v1', url })).toThrow(
      expect.objectContaining({ message: expect.stringContaining("(the registry's URL of acme/x@v1)") }),
    );
    expect(() => requireHttps({ ref: 'acme/x@v1', url: 'https://hub.example/x.forkd.tar.zst' })).not.toThrow();
  });
});
