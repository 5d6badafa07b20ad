import type { IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { ForkdError } from '../../src/errors.js';
import { BranchTracker } from '../../src/server/branches.js';
import { authFailure, isHealthz, loadOrCreateToken, tokenMatches, validateToken } from '../../src/server/auth.js';
import { parseListen } from '../../src/server/daemon.js';
import { Metrics } from '../../src/server/metrics.js';
import { Router } from '../../src/server/router.js';
import { API } from '../../src/api/routes.js';
import { OperationSlots } from '../../src/server/slots.js';
import { gauges } from '../helpers/metrics-gauges.js';

describe('auth', () => {
  test.each(['', 'short', 'REPLACE_ME', 'CHANGE_ME_PLEASE_0123456789', 'changeme', 'x'.repeat(40), '0'.repeat(32)])(
    'refuses token %j',
    (token) => {
      expect(() => validateToken(token, 'f')).toThrow(expect.objectContaining({ code: 'FORKD_ERR_BAD_INPUT' }));
    },
  );

  test('creates a 0600 token file once and reuses it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'forkd-auth-'));
    try {
      const file = join(dir, 'token');
      const first = loadOrCreateToken(file);
      expect(first).toMatch(/^[0-9a-f]{64}$/);
      expect(statSync(file).mode & 0o777).toBe(0o600);
      expect(loadOrCreateToken(file)).toBe(first);
      writeFileSync(file, 'REPLACE_ME_WITH_A_REAL_TOKEN');
      expect(() => loadOrCreateToken(file)).toThrow(/placeholder/);
      expect(readFileSync(file, 'utf8')).toBe('REPLACE_ME_WITH_A_REAL_TOKEN'); // never overwritten
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('compares tokens of any length without throwing', () => {
    const token = 'a'.repeat(32);
    expect(tokenMatches(token, token)).toBe(true);
    expect(tokenMatches(`${token}a`, token)).toBe(false);
    expect(tokenMatches(token.slice(1), token)).toBe(false);
    expect(tokenMatches('', token)).toBe(false);
  });

  test('header rules: the "Bearer" scheme in any case (RFC 7235), then a space, trimmed token', () => {
    const token = 'b'.repeat(32);
    expect(authFailure(undefined, token)).toBe('missing bearer token');
    for (const scheme of ['bearer', 'BEARER', 'bEaReR'])
      expect(authFailure(`${scheme} ${token}`, token)).toBeUndefined();
    expect(authFailure(`Bearer${token}`, token)).toBe('missing bearer token');
    expect(authFailure(`Basic ${token}`, token)).toBe('missing bearer token');
    expect(authFailure(`bearer ${token}x`, token)).toBe('invalid bearer token');
    expect(authFailure('Bearer   ', token)).toBe('missing bearer token');
    expect(authFailure(`Bearer ${token}x`, token)).toBe('invalid bearer token');
    expect(authFailure(`Bearer  ${token} `, token)).toBeUndefined();
  });

  test.each([
    ['/healthz', true],
    ['/healthz/', true],
    ['/healthz?x', false],
    ['/healthz/../v1/sandboxes', false],
    ['/Healthz', false],
    ['/healthz%2f', false],
  ])('healthz bypass for %s is %s', (url, open) => {
    expect(isHealthz(url)).toBe(open);
  });
});

describe('parseListen', () => {
  test.each([
    ['/run/forkd.sock', { kind: 'unix', path: '/run/forkd.sock' }],
    ['127.0.0.1:8889', { kind: 'tcp', host: '127.0.0.1', port: 8889 }],
    ['[::1]:0', { kind: 'tcp', host: '::1', port: 0 }],
  ])('%s', (listen, parsed) => {
    expect(parseListen(listen)).toEqual(parsed);
  });
});

describe('OperationSlots', () => {
  test('503 at the cap, 409 on a busy tag, release is idempotent', () => {
    const slots = new OperationSlots(2);
    const a = slots.acquire('t');
    expect(() => slots.acquire('t')).toThrow(expect.objectContaining({ code: 'FORKD_ERR_CONFLICT' }));
    const b = slots.acquire();
    expect(() => slots.acquire('u')).toThrow(expect.objectContaining({ code: 'FORKD_ERR_BUSY' }));
    expect(() => slots.acquire('t', false)).toThrow(expect.objectContaining({ code: 'FORKD_ERR_CONFLICT' }));
    a();
    a();
    expect(slots.active).toBe(1);
    slots.acquire('t', false)();
    b();
    expect(slots.active).toBe(0);
  });
});

describe('Router', () => {
  test('matches routes of the API table, validates params and query, tells a wrong method from an unknown path', async () => {
    const router = new Router().on(API.console, async ({ params, query }) => ({
      status: 200,
      json: { params, query },
    }));
    const route = (path: string) => {
      const m = router.match('GET', path);
      if (!m || m === 'method') throw new Error(`no route for ${path}`);
      return m;
    };
    const id = 'sb-0123456789ab';
    const req = Object.assign(Readable.from([]), { headers: {} }) as unknown as IncomingMessage; // no body
    expect(await router.dispatch(route(`/v1/sandboxes/${id}/console`), req, new URLSearchParams('lines=7'))).toEqual({
      status: 200,
      json: { params: { id }, query: { lines: 7 } },
    });
    await expect(
      router.dispatch(route(`/v1/sandboxes/${id}/console`), req, new URLSearchParams('lines=2.5')),
    ).rejects.toMatchObject({ code: 'FORKD_ERR_BAD_INPUT', message: '"lines" must be an integer from 1 to 1000' });
    await expect(
      router.dispatch(route(`/v1/sandboxes/${id}/console`), req, new URLSearchParams('line=7')),
    ).rejects.toMatchObject({ message: 'unknown field: line', hint: 'allowed: lines' });
    await expect(
      router.dispatch(route('/v1/sandboxes/..%2Fetc/console'), req, new URLSearchParams()),
    ).rejects.toMatchObject({ code: 'FORKD_ERR_BAD_INPUT', message: expect.stringContaining('"id" must be') });
    expect(router.match('POST', `/v1/sandboxes/${id}/console`)).toBe('method');
    expect(router.match('GET', `/v1/sandboxes/${id}/console/x`)).toBeUndefined();
  });
});

describe('Metrics', () => {
  test('renders a cumulative fork latency histogram', () => {
    const m = new Metrics();
    m.observeFork(7);
    m.observeFork(120);
    const text = m.render(gauges({ sandboxesActive: 2, snapshots: 1, poolsFailing: 1 }));
    expect(text).toContain('forkd_pools_failing 1\n');
    expect(text).toContain('forkd_fork_latency_ms_bucket{le="5"} 0\n');
    expect(text).toContain('forkd_fork_latency_ms_bucket{le="10"} 1\n');
    expect(text).toContain('forkd_fork_latency_ms_bucket{le="250"} 2\n');
    expect(text).toContain('forkd_fork_latency_ms_count 2\n');
    expect(text).toContain('forkd_sandboxes_active 2\n');
  });

  test('exact p50 and p90 of recent forks, and the peak of live sandboxes', () => {
    const m = new Metrics();
    const empty = m.render(gauges());
    expect(empty).toContain('forkd_fork_latency_p50_ms NaN\n');
    for (let ms = 1; ms <= 10; ms++) m.observeFork(ms * 10);
    for (const alive of [1, 4, 2]) m.observeSandboxes(alive);
    const text = m.render(gauges({ sandboxesActive: 2, snapshots: 1 }));
    expect(text).toContain('forkd_fork_latency_p50_ms 60.0\n');
    expect(text).toContain('forkd_fork_latency_p90_ms 100.0\n');
    expect(text).toContain('forkd_sandboxes_peak 4\n');
  });

  test('p50 and p90 cover the newest 10,000 forks only', () => {
    const m = new Metrics();
    for (let i = 0; i < 10_000; i++) m.observeFork(1000);
    for (let i = 0; i < 10_000; i++) m.observeFork(i % 2 ? 5 : 7);
    const text = m.render(gauges());
    expect(text).toContain('forkd_fork_latency_p90_ms 7.0\n');
    expect(text).toContain('forkd_forks_total 20000\n');
  });
});

describe('BranchTracker (wait: false branches)', () => {
  test('writing until done; gone once committed, or failed with the reason until the tag is used again', async () => {
    const tracker = new BranchTracker();
    let finish!: () => void;
    let fail!: (err: unknown) => void;
    tracker.track('ok', 'sb-1', new Promise<void>((resolve) => (finish = resolve)));
    tracker.track('bad', 'sb-1', new Promise<void>((_, reject) => (fail = reject)));
    expect(tracker.list()).toEqual([
      { tag: 'ok', status: 'writing', sandbox: 'sb-1' },
      { tag: 'bad', status: 'writing', sandbox: 'sb-1' },
    ]);
    finish();
    fail(new ForkdError('FORKD_ERR_QEMU_EXITED', 'the copy died', { hint: 'retry' }));
    await tracker.settled();
    expect(tracker.get('ok')).toBeUndefined(); // an ordinary snapshot now
    expect(tracker.get('bad')).toEqual({
      tag: 'bad',
      status: 'failed',
      sandbox: 'sb-1',
      error: { code: 'FORKD_ERR_QEMU_EXITED', error: 'the copy died', hint: 'retry' },
    });
    tracker.forget('bad');
    expect(tracker.list()).toEqual([]);
  });
});
