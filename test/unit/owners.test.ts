import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import { Metrics } from '../../src/server/metrics.js';
import { ownerAlive, ownerRecord, processStartTime } from '../../src/server/owners.js';
import { gauges } from '../helpers/metrics-gauges.js';

describe('owner processes', () => {
  test("a pid is pinned to its process's start time; a dead or unborn pid is refused with a hint", () => {
    const start = processStartTime(process.pid);
    expect(start).toBeGreaterThan(0);
    expect(processStartTime(process.pid)).toBe(start);
    const owner = ownerRecord({ label: 'me', pid: process.pid });
    expect(owner).toEqual({ label: 'me', pid: process.pid, pidStart: start });
    expect(ownerAlive(owner)).toBe(true);
    expect(ownerAlive({ ...owner, pidStart: start! - 1 })).toBe(false); // the pid, reused by another process
    expect(ownerRecord({ label: 'anywhere' })).toEqual({ label: 'anywhere' });

    const gone = spawnSync('true').pid;
    const unborn = Number(readFileSync('/proc/sys/kernel/pid_max', 'utf8')) + 1;
    expect(processStartTime(unborn)).toBeUndefined();
    expect(() => ownerRecord({ label: 'x', pid: unborn })).toThrow(
      expect.objectContaining({ code: 'FORKD_ERR_BAD_INPUT', hint: expect.stringContaining("daemon's host") }),
    );
    if (processStartTime(gone) === undefined) expect(ownerAlive({ label: 'x', pid: gone, pidStart: 1 })).toBe(false);
  });

  test('a command name with spaces and parentheses does not shift the fields', () => {
    const stat = readFileSync(`/proc/${process.pid}/stat`, 'utf8');
    expect(Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19])).toBe(processStartTime(process.pid));
  });
});

describe('reap metrics', () => {
  test('forkd_sandboxes_reaped_total by reason, and the ledger by role', () => {
    const m = new Metrics();
    m.observeReap('lease');
    m.observeReap('lease');
    m.observeReap('exited');
    const text = m.render(gauges({ vms: { sandbox: 2, spare: 1 } }));
    expect(text).toContain('forkd_sandboxes_reaped_total{reason="lease"} 2\n');
    expect(text).toContain('forkd_sandboxes_reaped_total{reason="owner"} 0\n');
    expect(text).toContain('forkd_sandboxes_reaped_total{reason="exited"} 1\n');
    expect(text).toContain('forkd_vms{role="sandbox"} 2\nforkd_vms{role="spare"} 1\n');
  });
});
