import type { Engine } from '../engine/engine.js';
import { errorMessage } from '../errors.js';
import type { AuditLog } from './audit.js';
import type { Ledger, VmRecord } from './ledger.js';

/**
 * Reconciles with the VMs a previous daemon left (it was killed, or its host process died): live
 * sandboxes whose agent answers are adopted under their ids; sandboxes whose QEMU is gone, and
 * every other VM (pool spares, children on their way, branch helpers: their pools and requests
 * died with that daemon), are reaped. A sandbox that is running but cannot be adopted is killed,
 * and said so on stderr and in the audit log. Nothing is left behind.
 */
export async function adoptLeftovers(ledger: Ledger, engine: Engine, audit: AuditLog): Promise<void> {
  await Promise.all(ledger.leftovers().map((record) => reconcile(record, ledger, engine, audit)));
}

async function reconcile(record: VmRecord, ledger: Ledger, engine: Engine, audit: AuditLog): Promise<void> {
  const { sandbox } = record;
  const running = engine.leftoverRunning(record.runDir, record.pid);
  const what = { vm: record.vm, role: record.role, snapshot: record.snapshot, ...(sandbox ? { id: sandbox.id } : {}) };
  if (sandbox && running) {
    try {
      const vm = await engine.adopt({
        runDir: record.runDir,
        spec: record.spec,
        readyMs: sandbox.readyMs,
        ports: sandbox.ports ?? {},
        snapshot: record.snapshot!,
      });
      ledger.adopt(record, vm);
      audit.event({ event: 'adopt', ...what });
      return;
    } catch (err) {
      const error = errorMessage(err).split('\n')[0]!;
      process.stderr.write(
        `forkd: could not adopt sandbox ${sandbox.id} (${record.vm}, pid file in ${record.runDir}): ${error}; it was killed\n`,
      );
      audit.event({ event: 'adopt-failed', ...what, error });
    }
  } else {
    const reason = running ? `${record.role} of a previous daemon` : 'qemu exited while no daemon ran';
    audit.event({ event: 'reap', ...what, reason });
  }
  await engine.reapLeftover(record.runDir, record.pid);
  ledger.forget(record.vm);
}
