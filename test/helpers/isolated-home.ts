import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect } from 'vitest';
import type { Engine } from '../../src/engine/engine.js';
import { openEngine, type Hub } from '../../src/hub/hub.js';
import type { StartedVm } from '../../src/engine/vmm/vm.js';
import { StatePaths } from '../../src/common/state-dir.js';

/**
 * A state dir of its own for one test file: built images are shared with the real cache (symlink),
 * everything a VM writes (sockets, logs, scratch) lands here, so leak checks see only this file's VMs.
 */
export class IsolatedHome {
  readonly root: string;
  readonly paths: StatePaths;
  readonly engine: Engine;
  readonly hub: Hub;

  constructor(parentDir: string = tmpdir()) {
    const shared = new StatePaths();
    this.root = mkdtempSync(join(parentDir, 'forkd-test-'));
    mkdirSync(join(shared.root, 'images'), { recursive: true });
    symlinkSync(join(shared.root, 'images'), join(this.root, 'images'));
    if (existsSync(shared.file('accel.json'))) copyFileSync(shared.file('accel.json'), join(this.root, 'accel.json'));
    this.paths = new StatePaths(this.root);
    ({ engine: this.engine, hub: this.hub } = openEngine(this.paths));
  }

  /** Environment for a CLI child process that should use this home. */
  env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
    return { ...process.env, FORKD_HOME: this.root, ...extra };
  }

  /** QEMU processes whose command line points into this home. */
  qemuProcesses(): string[] {
    return execFileSync('ps', ['-eo', 'pid=,args='], { encoding: 'utf8' })
      .split('\n')
      .filter((line) => line.includes('qemu-system') && line.includes(this.root));
  }

  /** Kills the QEMUs a failed test leaked (they must not outlive the run); returns their pids. */
  killLeakedQemu(): number[] {
    const leaked = this.qemuProcesses().map((line) => Number(line.trim().split(/\s+/)[0]));
    for (const pid of leaked) process.kill(pid, 'SIGKILL');
    return leaked;
  }

  entries(dir: 'run' | 'tmp' | 'logs' | 'snapshots' | 'ledger'): string[] {
    const path = join(this.root, dir);
    return existsSync(path) ? readdirSync(path) : [];
  }

  /** Everything this home may still hold after the file's VMs are gone. */
  leftovers(): { qemu: string[]; run: string[]; tmp: string[]; logs: string[] } {
    return {
      qemu: this.qemuProcesses(),
      run: this.entries('run'),
      tmp: this.entries('tmp'),
      logs: this.entries('logs'),
    };
  }

  remove(): void {
    rmSync(this.root, { recursive: true, force: true });
  }
}

export const NOTHING_LEFT = { qemu: [], run: [], tmp: [], logs: [] };

/**
 * Boots `count` VMs for a whole test file in an isolated home. After the file, they are killed
 * and the home must hold nothing: no QEMU, socket, scratch dir or log.
 */
export function bootForFile(count = 1): { home: IsolatedHome; vms: StartedVm[] } {
  const home = new IsolatedHome();
  const vms: StartedVm[] = [];
  beforeAll(async () => {
    vms.push(...(await Promise.all(Array.from({ length: count }, () => home.engine.boot()))));
  });
  afterAll(async () => {
    await Promise.all(vms.map((vm) => vm.kill()));
    expect(home.leftovers()).toEqual(NOTHING_LEFT);
    home.remove();
  });
  return { home, vms };
}
