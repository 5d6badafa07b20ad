import { writeJsonAtomic } from '../common/atomic-file.js';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { SandboxInfo } from '../api/types.js';
import { ForkdError } from '../errors.js';
import type { VmSpec } from '../engine/vmm/qemu-args.js';
import type { StartedVm } from '../engine/vmm/vm.js';

export interface Sandbox {
  id: string;
  snapshot: string;
  vm: StartedVm;
  created: Date;
}

/** What survives a daemon restart: enough to find the VM again and reconnect to it. */
export interface SandboxRecord {
  id: string;
  snapshot: string;
  created: string;
  runDir: string;
  spec: VmSpec;
  readyMs: number;
  ports: Record<string, number>;
}

const ID_PATTERN = /^sb-[0-9a-f]{12}$/;

/** The sandboxes (forked children) the daemon owns, by id, each also recorded on disk. */
export class SandboxRegistry {
  private readonly sandboxes = new Map<string, Sandbox>();

  constructor(private readonly dir: string) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }

  get size(): number {
    return this.sandboxes.size;
  }

  add(snapshot: string, vm: StartedVm): Sandbox {
    return this.restore(
      {
        id: `sb-${randomBytes(6).toString('hex')}`,
        snapshot,
        created: new Date().toISOString(),
        runDir: vm.runDir,
        spec: vm.spec,
        readyMs: vm.readyMs,
        ports: vm.ports,
      },
      vm,
    );
  }

  /** Registers a sandbox under a known record (a new one, or one adopted after a restart). */
  restore(record: SandboxRecord, vm: StartedVm): Sandbox {
    const file = join(this.dir, `${record.id}.json`);
    writeJsonAtomic(file, record);
    const sandbox = { id: record.id, snapshot: record.snapshot, vm, created: new Date(record.created) };
    this.sandboxes.set(sandbox.id, sandbox);
    return sandbox;
  }

  /** Records left by a previous daemon, for adoption; unreadable ones are removed. */
  leftovers(): SandboxRecord[] {
    const records: SandboxRecord[] = [];
    for (const name of readdirSync(this.dir)) {
      const file = join(this.dir, name);
      try {
        const record = JSON.parse(readFileSync(file, 'utf8')) as SandboxRecord;
        if (!ID_PATTERN.test(record.id) || typeof record.runDir !== 'string') throw new Error('not a sandbox record');
        records.push(record);
      } catch {
        rmSync(file, { force: true });
      }
    }
    return records;
  }

  forget(id: string): void {
    rmSync(join(this.dir, `${id}.json`), { force: true });
  }

  get(id: string): Sandbox {
    if (!ID_PATTERN.test(id)) {
      throw new ForkdError('FORKD_ERR_BAD_INPUT', `invalid sandbox id ${JSON.stringify(id)}`, {
        hint: 'ids look like sb-0123456789ab',
      });
    }
    const sandbox = this.sandboxes.get(id);
    if (!sandbox)
      throw new ForkdError('FORKD_ERR_NOT_FOUND', `no sandbox ${id}`, {
        hint: 'GET /v1/sandboxes lists the live ones',
      });
    return sandbox;
  }

  /** Removes and returns the sandbox (the caller kills its VM). */
  take(id: string): Sandbox {
    const sandbox = this.get(id);
    this.sandboxes.delete(id);
    this.forget(id);
    return sandbox;
  }

  list(): Sandbox[] {
    return [...this.sandboxes.values()];
  }

  /** Empties the registry, returning everything that was in it. */
  drain(): Sandbox[] {
    const all = this.list();
    this.sandboxes.clear();
    for (const s of all) this.forget(s.id);
    return all;
  }
}

export function sandboxInfo(s: Sandbox): SandboxInfo {
  return {
    id: s.id,
    snapshot: s.snapshot,
    pid: s.vm.pid,
    accel: s.vm.accel,
    created: s.created.toISOString(),
    ready_ms: Math.round(s.vm.readyMs * 10) / 10,
    ports: s.vm.ports,
  };
}
