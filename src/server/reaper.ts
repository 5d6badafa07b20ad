import { describeExit } from '../engine/engine.js';
import { errorMessage } from '../errors.js';
import type { AuditLog } from './audit.js';
import type { Ledger, Sandbox } from './ledger.js';
import type { Metrics, ReapKind } from './metrics.js';
import { ownerAlive } from './owners.js';

/** How often leases and owner processes are checked: a reap comes at most this late. */
const SWEEP_MS = 500;

/**
 * Removes sandboxes nobody holds any more: a lease run out, an owner process gone (checked every
 * SWEEP_MS), a QEMU that exited (at once: its exit is watched). Each reap is counted in /metrics
 * and written to the audit log with its reason.
 */
export class Reaper {
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly ledger: Ledger,
    private readonly audit: AuditLog,
    private readonly metrics: Metrics,
  ) {
    ledger.onSandbox = (sandbox) =>
      void sandbox.vm.exited.then((info) => this.reap(sandbox, 'exited', 'qemu exited', { exit: describeExit(info) }));
    this.timer = setInterval(() => this.sweep(), SWEEP_MS).unref();
  }

  private sweep(): void {
    const now = Date.now();
    const alive = new Map<string, boolean>(); // each owner process is checked once per sweep
    for (const sandbox of this.ledger.list()) {
      const { owner } = sandbox;
      if (sandbox.inFlight > 0) continue; // its lease renews when its requests end
      if (sandbox.ttlS !== null && sandbox.expires <= now) {
        void this.reap(sandbox, 'lease', 'lease expired', { ttl_s: sandbox.ttlS });
      } else if (owner?.pid !== undefined) {
        const key = `${owner.pid}:${owner.pidStart}`;
        if (!alive.has(key)) alive.set(key, ownerAlive(owner));
        if (!alive.get(key)) void this.reap(sandbox, 'owner', `owner pid ${owner.pid} exited`);
      }
    }
  }

  /** Removes the sandbox and kills its VM; never rejects: a kill that fails is said on stderr and in the audit log. */
  private reap(sandbox: Sandbox, kind: ReapKind, reason: string, details: object = {}): Promise<void> {
    return this.kill(sandbox, kind, reason, details).catch((err: unknown) => {
      const error = errorMessage(err).split('\n')[0]!;
      process.stderr.write(`forkd: reaping sandbox ${sandbox.id} (${sandbox.vm.id}) failed: ${error}\n`);
      this.audit.event({ event: 'reap-failed', id: sandbox.id, vm: sandbox.vm.id, reason, error });
    });
  }

  private async kill(sandbox: Sandbox, kind: ReapKind, reason: string, details: object): Promise<void> {
    if (!this.ledger.release(sandbox)) return; // deleted, or reaped for another reason, already
    this.metrics.observeReap(kind);
    this.audit.event({
      event: 'reap',
      id: sandbox.id,
      vm: sandbox.vm.id,
      snapshot: sandbox.snapshot,
      reason,
      ...(sandbox.owner ? { owner: sandbox.owner.label } : {}),
      ...details,
    });
    await sandbox.vm.kill();
  }

  close(): void {
    clearInterval(this.timer);
  }
}
