import { randomBytes } from 'node:crypto';
import { ForkdError } from '../errors.js';
import type { StartedVm } from '../engine/vmm/vm.js';

export interface Sandbox {
  id: string;
  snapshot: string;
  vm: StartedVm;
  created: Date;
}

export interface SandboxInfo {
  id: string;
  snapshot: string;
  pid: number;
  accel: string;
  created: string;
  ready_ms: number;
}

const ID_PATTERN = /^sb-[0-9a-f]{12}$/;

/** The sandboxes (forked children) the daemon owns, by id. */
export class SandboxRegistry {
  private readonly sandboxes = new Map<string, Sandbox>();

  get size(): number {
    return this.sandboxes.size;
  }

  add(snapshot: string, vm: StartedVm): Sandbox {
    const sandbox = { id: `sb-${randomBytes(6).toString('hex')}`, snapshot, vm, created: new Date() };
    this.sandboxes.set(sandbox.id, sandbox);
    return sandbox;
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
    return sandbox;
  }

  list(): Sandbox[] {
    return [...this.sandboxes.values()];
  }

  /** Empties the registry, returning everything that was in it. */
  drain(): Sandbox[] {
    const all = this.list();
    this.sandboxes.clear();
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
  };
}
