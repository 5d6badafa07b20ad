import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, describe, expect, test, vi } from 'vitest';
import { findQemu } from '../../src/engine/vmm/qemu-binary.js';
import type { StartedVm, VmSpec } from '../../src/engine/engine.js';
import { adoptLeftovers } from '../../src/server/adoption.js';
import { AuditLog } from '../../src/server/audit.js';
import { Ledger, type VmRecord } from '../../src/server/ledger.js';
import { Metrics } from '../../src/server/metrics.js';
import { Reaper } from '../../src/server/reaper.js';
import { IsolatedHome } from '../helpers/isolated-home.js';

const home = new IsolatedHome();
const ledgerDir = join(home.root, 'ledger');
const audit = new AuditLog(join(home.root, 'audit.log'));
const spec = { memoryMiB: 256 } as VmSpec;

afterAll(async () => {
  await home.engine.close();
  expect(home.qemuProcesses()).toEqual([]);
  home.remove();
});

function auditEvents(): Array<Record<string, unknown>> {
  return readFileSync(audit.file, 'utf8')
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

describe('records read back from disk', () => {
  test('a record naming another run dir, another VM or a bad pid is refused and removed, nothing else touched', async () => {
    const victim = join(home.root, 'victim');
    mkdirSync(victim);
    writeFileSync(join(victim, 'keep'), 'precious');
    writeFileSync(join(home.root, 'victim.json'), 'precious');
    const otherRun = join(home.paths.run(), 'vm-00000000ff');
    mkdirSync(otherRun);
    const hostile: Record<string, Partial<VmRecord> & Record<string, unknown>> = {
      'vm-0000000001': { runDir: victim },
      'vm-0000000002': { runDir: `${home.paths.run()}/vm-0000000002/../../victim` },
      'vm-0000000003': { runDir: home.paths.run() },
      'vm-0000000004': { runDir: otherRun },
      'vm-0000000005': { vm: '../victim', runDir: join(home.paths.run(), 'vm-0000000005') },
      'vm-0000000006': { runDir: join(home.paths.run(), 'vm-0000000006'), pid: -1 },
    };
    const ledger = new Ledger(ledgerDir, home.paths.run());
    for (const [vm, fields] of Object.entries(hostile)) {
      const record = { vm, role: 'spare', snapshot: 'x', spec, ...fields };
      writeFileSync(join(ledgerDir, `${vm}.json`), JSON.stringify(record));
    }
    writeFileSync(join(ledgerDir, 'notes.txt'), 'not a record');
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      await adoptLeftovers(ledger, home.engine, audit);
      const said = stderr.mock.calls.map(([text]) => String(text)).join('');
      for (const vm of Object.keys(hostile))
        expect(said).toContain(`ignoring ledger record ${join(ledgerDir, vm)}.json`);
      expect(said).toContain('notes.txt: not a VM record name');
    } finally {
      stderr.mockRestore();
    }
    expect(readFileSync(join(victim, 'keep'), 'utf8')).toBe('precious');
    expect(readFileSync(join(home.root, 'victim.json'), 'utf8')).toBe('precious');
    expect(existsSync(otherRun)).toBe(true);
    expect(home.entries('ledger')).toEqual([]);
  });

  test('a QEMU whose daemon died before it wrote qemu.pid is found by its spawned pid and reaped', async () => {
    const ledger = new Ledger(ledgerDir, home.paths.run());
    const id = 'vm-00000000aa';
    const runDir = join(home.paths.run(), id);
    mkdirSync(runDir);
    // a real QEMU that waits, started from this run dir, that has written no pid file
    const qemu = spawn(
      (await findQemu()).path,
      ['-machine', 'none', '-nodefaults', '-display', 'none', '-S', '-name', runDir],
      {
        stdio: 'ignore',
      },
    );
    const exited = new Promise((resolve) => qemu.once('exit', resolve));
    try {
      ledger.launched({ id, runDir, pid: qemu.pid!, spec }, 'spare', 'x');
      expect(home.qemuProcesses()).toHaveLength(1);
      await adoptLeftovers(new Ledger(ledgerDir, home.paths.run()), home.engine, audit);
      await Promise.race([exited, sleep(10_000)]);
    } finally {
      qemu.kill('SIGKILL'); // reaped above, unless this test fails
    }
    expect(home.qemuProcesses()).toEqual([]);
    expect(existsSync(runDir)).toBe(false);
    expect(home.entries('ledger')).toEqual([]);
    expect(auditEvents().at(-1)).toMatchObject({ event: 'reap', vm: id, reason: 'spare of a previous daemon' });
  });
});

describe('the reaper', () => {
  test('a kill that fails is said on stderr and in the audit log, never an unhandled rejection', async () => {
    const ledger = new Ledger(ledgerDir, home.paths.run());
    const reaper = new Reaper(ledger, audit, new Metrics());
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      const vm = {
        id: 'vm-00000000bb',
        runDir: join(home.paths.run(), 'vm-00000000bb'),
        pid: 1,
        spec,
        readyMs: 1,
        ports: {},
        exited: Promise.resolve({ code: 0, signal: null }),
        kill: () => Promise.reject(new Error('kill failed: ESRCH')),
      } as unknown as StartedVm;
      const sandbox = ledger.addSandbox('x', vm, { owner: null, ttlS: null });
      await vi.waitFor(() => expect(auditEvents().at(-1)).toMatchObject({ event: 'reap-failed', id: sandbox.id }));
      expect(auditEvents().at(-1)).toMatchObject({ vm: vm.id, reason: 'qemu exited', error: 'kill failed: ESRCH' });
      expect(stderr.mock.calls.map(([text]) => String(text)).join('')).toContain(
        `reaping sandbox ${sandbox.id} (${vm.id}) failed: kill failed: ESRCH`,
      );
      ledger.forget(vm.id);
    } finally {
      stderr.mockRestore();
      reaper.close();
    }
  });
});
