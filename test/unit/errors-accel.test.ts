import { describe, expect, test } from 'vitest';
import { parseAccelEnv } from '../../src/engine/accel.js';
import { parseExecReply } from '../../src/engine/agent/guest.js';
import { stateDir } from '../../src/common/state-dir.js';
import { ForkdError } from '../../src/errors.js';

describe('ForkdError', () => {
  test('carries a stable code and a hint, and serialises without a stack', () => {
    const err = new ForkdError('FORKD_ERR_BAD_INPUT', 'bad tag', { hint: 'use letters' });
    expect(err).toBeInstanceOf(Error);
    expect(err).toBeInstanceOf(ForkdError);
    expect(err.describe()).toBe('bad tag\n  hint: use letters');
    expect(JSON.parse(JSON.stringify(err))).toEqual({
      code: 'FORKD_ERR_BAD_INPUT',
      error: 'bad tag',
      hint: 'use letters',
    });
  });

  test('instanceof works across copies of the module (brand, not prototype)', () => {
    const foreign = Object.assign(new Error('x'), { [Symbol.for('forkd.error')]: true });
    expect(foreign instanceof ForkdError).toBe(true);
    expect(new Error('y') instanceof ForkdError).toBe(false);
  });
});

describe('parseAccelEnv', () => {
  test.each([
    [undefined, undefined],
    ['', undefined],
    ['auto', undefined],
    ['kvm', 'kvm'],
    ['tcg', 'tcg'],
  ])('%j -> %j', (value, accel) => {
    expect(parseAccelEnv(value)).toBe(accel);
  });

  test('refuses anything else with a hint', () => {
    expect(() => parseAccelEnv('hvf')).toThrow(
      expect.objectContaining({ code: 'FORKD_ERR_BAD_INPUT', hint: expect.any(String) }),
    );
  });
});

describe('stateDir', () => {
  test('FORKD_HOME wins, then XDG_CACHE_HOME, then ~/.cache', () => {
    expect(stateDir({ FORKD_HOME: '/x/y' })).toBe('/x/y');
    expect(stateDir({ XDG_CACHE_HOME: '/c' })).toBe('/c/forkd');
    expect(stateDir({})).toMatch(/\/\.cache\/forkd$/);
  });
});

describe('parseExecReply', () => {
  test('decodes output and names the signal', () => {
    const r = parseExecReply({
      id: 1,
      ok: true,
      exit_code: 137,
      signal: 9,
      timed_out: true,
      duration_ms: 12,
      stdout: Buffer.from([0, 255]).toString('base64'),
      stderr: '',
      stdout_truncated: false,
      stderr_truncated: true,
    });
    expect(r).toMatchObject({
      exitCode: 137,
      signal: 'SIGKILL',
      timedOut: true,
      stderrTruncated: true,
      durationMs: 12,
    });
    expect([...r.stdout]).toEqual([0, 255]);
  });
});
