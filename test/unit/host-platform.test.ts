import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { refuseUnsupportedRunner } from '../../src/action/runner-host.js';
import { runDoctor } from '../../src/cli/doctor.js';
import { unsupportedHost } from '../../src/engine/host-platform.js';
import { StatePaths } from '../../src/common/state-dir.js';

const elsewhere = [
  { platform: 'darwin', arch: 'arm64' },
  { platform: 'darwin', arch: 'x64' },
  { platform: 'linux', arch: 'arm64' },
  { platform: 'win32', arch: 'x64' },
];

const roots: string[] = [];
afterEach(() => {
  for (const root of roots.splice(0)) rmSync(root, { recursive: true, force: true });
});

describe('hosts forkd runs on', () => {
  test('x86_64 Linux only', () => {
    expect(unsupportedHost({ platform: 'linux', arch: 'x64' })).toBeUndefined();
    for (const host of elsewhere) expect(unsupportedHost(host)).toContain(`this host is ${host.platform}/${host.arch}`);
  });

  test.each(elsewhere)('the Action refuses a $platform/$arch runner with one clear error', (runner) => {
    expect(() => refuseUnsupportedRunner(runner)).toThrow(
      expect.objectContaining({
        code: 'FORKD_ERR_INCOMPATIBLE',
        message: expect.stringContaining(`${runner.platform}/${runner.arch}`),
        hint: expect.stringContaining('x86_64 Linux runner'),
      }),
    );
    expect(() => refuseUnsupportedRunner({ platform: 'linux', arch: 'x64' })).not.toThrow();
  });

  test.each(elsewhere)('forkd doctor on $platform/$arch fails at the platform and probes nothing', async (host) => {
    const root = mkdtempSync(join(tmpdir(), 'forkd-platform-'));
    roots.push(root);
    const report = await runDoctor(new StatePaths(root), host);
    expect(report).toMatchObject({ ok: false, accel: null, summary: { pass: 0, warn: 0, fail: 1, skip: 0 } });
    expect(report.checks).toEqual([
      expect.objectContaining({ name: 'platform', status: 'fail', hint: 'use an x86_64 Linux host' }),
    ]);
    expect(readdirSync(root)).toEqual([]); // nothing built or written
  });
});
