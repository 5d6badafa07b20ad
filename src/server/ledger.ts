import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { SANDBOX_ID_PATTERN_SOURCE } from '../api/schemas.js';
import type { SandboxInfo } from '../api/types.js';
import { writeJsonAtomic } from '../common/atomic-file.js';
import type { LaunchedVm, StartedVm, VmLedgerHook, VmRole, VmSpec } from '../engine/engine.js';
import { ForkdError, errorMessage } from '../errors.js';
import type { OwnerRecord } from './owners.js';

/** A forked child handed to a client, with who holds it and until when. */
export interface Sandbox {
  id: string;
  snapshot: string;
  vm: StartedVm;
  created: Date;
  owner: OwnerRecord | null;
  /** Seconds the sandbox lives after its last request or heartbeat; null: until it is deleted. */
  ttlS: number | null;
  /** When the lease runs out (ms since the epoch; meaningful only with ttlS). */
  expires: number;
  /** Requests (and branches) running on it now: the reaper leaves a busy sandbox alone. */
  inFlight: number;
}

/** What a sandbox's holder asked for when forking it. */
export interface Holder {
  owner: OwnerRecord | null;
  ttlS: number | null;
}

export type LedgerRole = VmRole | 'sandbox';

/** One QEMU the daemon started, as recorded on disk: what a restarted daemon needs to adopt or reap it. */
export interface VmRecord {
  vm: string;
  role: LedgerRole;
  snapshot: string | null;
  runDir: string;
  /** QEMU's pid as spawned: finds it when it was killed before writing qemu.pid. */
  pid?: number;
  spec: VmSpec;
  /** Set once the VM is a sandbox. */
  sandbox?: Holder & { id: string; created: string; readyMs: number; ports: Record<string, number> };
}

const SANDBOX_ID = new RegExp(SANDBOX_ID_PATTERN_SOURCE);
const VM_RECORD = /^(vm-[0-9a-f]{10})\.json$/;

/**
 * Every QEMU the daemon starts (sandboxes, pool spares, children on their way, branch helpers),
 * each recorded on disk from its spawn to its end, and the sandboxes among them by id with their
 * owners and leases. The engine reports launches and ends through the VmLedgerHook.
 */
export class Ledger implements VmLedgerHook {
  private readonly vms = new Map<string, VmRecord>();
  private readonly sandboxes = new Map<string, Sandbox>();
  /** Told of every sandbox added or adopted (the reaper watches its QEMU). */
  onSandbox: (sandbox: Sandbox) => void = () => {};
  /** Set by drain(): the daemon is closing, and nobody would kill a sandbox added after it. */
  private drained = false;

  /** `dir` holds the records; every VM's run dir is directly under `runRoot`. */
  constructor(
    private readonly dir: string,
    private readonly runRoot: string,
  ) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }

  get size(): number {
    return this.sandboxes.size;
  }

  /** QEMUs alive now, by role. */
  roles(): Record<LedgerRole, number> {
    const counts: Record<LedgerRole, number> = {
      sandbox: 0,
      spare: 0,
      child: 0,
      'branch-helper': 0,
      parent: 0,
      probe: 0,
    };
    for (const record of this.vms.values()) counts[record.role]++;
    return counts;
  }

  launched(vm: LaunchedVm, role: VmRole, snapshot: string | undefined): void {
    this.record({ vm: vm.id, role, snapshot: snapshot ?? null, runDir: vm.runDir, pid: vm.pid, spec: vm.spec });
  }

  ended(vm: LaunchedVm): void {
    this.forget(vm.id);
  }

  private record(record: VmRecord): void {
    writeJsonAtomic(join(this.dir, `${record.vm}.json`), record);
    this.vms.set(record.vm, record);
  }

  /** Removes a VM's record (its QEMU is gone). */
  forget(vm: string): void {
    this.vms.delete(vm);
    rmSync(join(this.dir, `${vm}.json`), { force: true });
  }

  /** Hands a forked child to a client as a new sandbox; once drained, kills it instead and throws. */
  addSandbox(snapshot: string, vm: StartedVm, holder: Holder): Sandbox {
    if (this.drained) {
      void vm.kill();
      throw new ForkdError('FORKD_ERR_BUSY', `the daemon is closing: sandbox of ${snapshot} not handed out`, {
        hint: 'start the daemon again and retry',
      });
    }
    return this.register(vm, {
      vm: vm.id,
      role: 'sandbox',
      snapshot,
      runDir: vm.runDir,
      pid: vm.pid,
      spec: vm.spec,
      sandbox: {
        id: `sb-${randomBytes(6).toString('hex')}`,
        created: new Date().toISOString(),
        readyMs: vm.readyMs,
        ports: vm.ports,
        ...holder,
      },
    });
  }

  /** Takes back a sandbox a previous daemon recorded (its lease starts afresh: nobody could renew it meanwhile). */
  adopt(record: VmRecord, vm: StartedVm): Sandbox {
    return this.register(vm, { ...record, sandbox: record.sandbox! });
  }

  private register(vm: StartedVm, record: VmRecord & { sandbox: NonNullable<VmRecord['sandbox']> }): Sandbox {
    const { id, created, owner, ttlS } = record.sandbox;
    this.record(record);
    const sandbox: Sandbox = {
      id,
      snapshot: record.snapshot!,
      vm,
      created: new Date(created),
      owner,
      ttlS,
      expires: 0,
      inFlight: 0,
    };
    renew(sandbox);
    this.sandboxes.set(id, sandbox);
    this.onSandbox(sandbox);
    return sandbox;
  }

  /**
   * Records left on disk by a previous daemon. Their run dirs get removed and their pids killed,
   * so a record that names another run dir, another VM or no pid is refused: said so on stderr
   * and removed, with nothing else touched.
   */
  leftovers(): VmRecord[] {
    const records: VmRecord[] = [];
    for (const name of readdirSync(this.dir)) {
      const file = join(this.dir, name);
      try {
        records.push(this.checked(name, file));
      } catch (err) {
        process.stderr.write(`forkd: ignoring ledger record ${file}: ${errorMessage(err)}\n`);
        rmSync(file, { force: true });
      }
    }
    return records;
  }

  private checked(name: string, file: string): VmRecord {
    const vm = VM_RECORD.exec(name)?.[1];
    if (!vm) throw new Error('not a VM record name');
    const record = JSON.parse(readFileSync(file, 'utf8')) as VmRecord;
    if (record.vm !== vm) throw new Error(`it names VM ${JSON.stringify(record.vm)}`);
    if (record.runDir !== join(this.runRoot, vm))
      throw new Error(`its run dir ${JSON.stringify(record.runDir)} is not ${vm}'s`);
    if (record.pid !== undefined && !(Number.isInteger(record.pid) && record.pid > 1))
      throw new Error(`its pid ${JSON.stringify(record.pid)} is not a pid`);
    if (record.sandbox && !SANDBOX_ID.test(record.sandbox.id)) throw new Error('its sandbox id is malformed');
    return record;
  }

  /** The sandbox a request names; a request on a sandbox renews its lease. */
  sandbox(id: string): Sandbox {
    if (!SANDBOX_ID.test(id)) {
      throw new ForkdError('FORKD_ERR_BAD_INPUT', `invalid sandbox id ${JSON.stringify(id)}`, {
        hint: 'ids look like sb-0123456789ab',
      });
    }
    const sandbox = this.sandboxes.get(id);
    if (!sandbox)
      throw new ForkdError('FORKD_ERR_NOT_FOUND', `no sandbox ${id}`, {
        hint: 'GET /v1/sandboxes lists the live ones',
      });
    renew(sandbox);
    return sandbox;
  }

  /** Removes and returns the sandbox (the caller kills its VM). */
  take(id: string): Sandbox {
    const sandbox = this.sandbox(id);
    this.sandboxes.delete(id);
    return sandbox;
  }

  /** Removes this very sandbox if it is still held; false when it was deleted or reaped already. */
  release(sandbox: Sandbox): boolean {
    if (this.sandboxes.get(sandbox.id) !== sandbox) return false;
    this.sandboxes.delete(sandbox.id);
    return true;
  }

  list(): Sandbox[] {
    return [...this.sandboxes.values()];
  }

  /** The sandboxes held by the owner labelled `label`. */
  ownedBy(label: string): Sandbox[] {
    return this.list().filter((s) => s.owner?.label === label);
  }

  /** Empties the ledger of sandboxes, returning them (their VMs' records go as the VMs end). */
  drain(): Sandbox[] {
    this.drained = true;
    const all = this.list();
    this.sandboxes.clear();
    return all;
  }
}

/** Marks a request running on the sandbox; the function returned ends it (once) and renews the lease. */
export function hold(sandbox: Sandbox): () => void {
  sandbox.inFlight++;
  let held = true;
  return () => {
    if (!held) return;
    held = false;
    sandbox.inFlight--;
    renew(sandbox);
  };
}

/** Starts a leased sandbox's lease over. */
export function renew(sandbox: Sandbox): boolean {
  if (sandbox.ttlS === null) return false;
  sandbox.expires = Date.now() + sandbox.ttlS * 1000;
  return true;
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
    owner: s.owner && { label: s.owner.label, ...(s.owner.pid !== undefined ? { pid: s.owner.pid } : {}) },
    lease: s.ttlS === null ? null : { ttl_s: s.ttlS, expires: new Date(s.expires).toISOString() },
  };
}
