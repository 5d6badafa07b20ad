import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { debugSections } from '../../src/common/debug.js';

const root = join(import.meta.dirname, '../..');

/**
 * Runs a real QMP exchange (a fake QEMU monitor in a run dir named vm-0123456789) and a pool line in
 * a fresh Node process with FORKD_DEBUG as given; returns what it wrote to stderr.
 */
function debugOutput(forkdDebug: string | undefined): string {
  const script = `
    import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
    import { createServer } from 'node:net';
    import { tmpdir } from 'node:os';
    import { join } from 'node:path';
    import { debuglog } from './src/common/debug.ts';
    import { QmpClient } from './src/engine/vmm/qmp.ts';
    const dir = mkdtempSync(join(tmpdir(), 'forkd-debug-'));
    mkdirSync(join(dir, 'vm-0123456789'));
    const server = createServer((socket) => {
      socket.write('{"QMP": {"version": {}, "capabilities": []}}\\r\\n');
      socket.on('data', (chunk) => {
        for (const line of chunk.toString().split('\\n').filter(Boolean)) {
          const { id } = JSON.parse(line);
          socket.write('{"event": "RESUME", "data": {}}\\r\\n{"return": {}, "id": ' + id + '}\\r\\n');
        }
      });
    });
    await new Promise((resolve) => server.listen(join(dir, 'vm-0123456789', 'qmp.sock'), resolve));
    const qmp = await QmpClient.connect(join(dir, 'vm-0123456789', 'qmp.sock'));
    await qmp.execute('cont');
    qmp.close();
    server.close();
    debuglog('pool')('vm-9876543210', 'spare ready (%d of %d)', 1, 2);
    rmSync(dir, { recursive: true, force: true });
  `;
  const env = { ...process.env };
  delete env.FORKD_DEBUG;
  if (forkdDebug !== undefined) env.FORKD_DEBUG = forkdDebug;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    cwd: root,
    env,
    encoding: 'utf8',
    timeout: 60_000,
  });
  expect(r.status, r.stderr).toBe(0);
  return r.stderr;
}

const line = (section: string, vm: string, text: string) =>
  new RegExp(`^\\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z forkd:${section} \\d+ ${vm}: ${text}$`, 'm');

describe('FORKD_DEBUG', () => {
  test('is off by default: nothing on stderr', () => {
    expect(debugOutput(undefined)).toBe('');
    expect(debugOutput('')).toBe('');
  });

  test('turns on the named sections only, every line naming its VM', () => {
    const qmp = debugOutput('qmp');
    expect(qmp).toMatch(line('qmp', 'vm-0123456789', '-> #1 qmp_capabilities \\{\\}'));
    expect(qmp).toMatch(line('qmp', 'vm-0123456789', '-> #2 cont \\{\\}'));
    expect(qmp).toMatch(line('qmp', 'vm-0123456789', 'event RESUME \\{\\}'));
    expect(qmp).toMatch(line('qmp', 'vm-0123456789', '<- #2 ok'));
    expect(qmp).not.toContain('forkd:pool');
    for (const text of qmp.trim().split('\n')) expect(text).toMatch(/ forkd:qmp \d+ vm-0123456789: /);

    const pool = debugOutput('pool');
    expect(pool).toMatch(line('pool', 'vm-9876543210', 'spare ready \\(1 of 2\\)'));
    expect(pool).not.toContain('forkd:qmp');

    const both = debugOutput('qmp, POOL');
    expect(both).toContain('forkd:qmp');
    expect(both).toContain('forkd:pool');
  });

  test('reads lists and wildcards like NODE_DEBUG', () => {
    const on = debugSections('qmp,po*');
    expect(['qmp', 'pool', 'agent', 'fork'].map(on)).toEqual([true, true, false, false]);
    expect(['qmp', 'vm'].map(debugSections('*'))).toEqual([true, true]);
    expect(['qmp', 'vm'].map(debugSections('all'))).toEqual([true, true]);
    expect(debugSections(undefined)('qmp')).toBe(false);
    expect(debugSections('q.p')('qmp')).toBe(false);
  });
});
