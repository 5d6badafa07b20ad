import { closeSync, openSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { errorMessage, ForkdError } from '../../errors.js';
import { Guest } from '../agent/guest.js';
import type { StatePaths } from '../../common/state-dir.js';
import { loadDeviceState } from '../vmm/device-state.js';
import { exposePorts, type PortMap } from '../vmm/ports.js';
import type { VmSpec } from '../vmm/qemu-args.js';
import type { QemuBinary } from '../vmm/qemu-binary.js';
import { VmProcess, type LaunchOptions } from '../vmm/vm-process.js';
import { StartedVm } from '../vmm/vm.js';
import type { SnapshotInfo } from './store.js';

const RESTORE_TIMEOUT_MS = 30_000;

/** A child on its way out of a snapshot: device state loaded; `running` once resumed. */
export interface PreparedChild {
  proc: VmProcess;
  running: boolean;
  ports: PortMap;
}

/** The child's hardware: the parent's exactly, but RAM mapped privately (copy-on-write) and waiting for state. */
export function childSpec(info: SnapshotInfo): VmSpec {
  const { meta } = info;
  return {
    ...meta.vm,
    accel: meta.accel,
    memoryMiB: meta.memoryMiB,
    vcpus: meta.vcpus,
    memoryFile: { path: info.memoryFile, shared: false },
    incoming: true,
  };
}

function restoredInfo() {
  return { hostname: `forkd-${randomBytes(3).toString('hex')}` };
}

const PRIME_TIMEOUT_MS = 60_000;

/** Starts QEMU for a child and loads the snapshot's device state; the guest stays paused. */
export async function prepareChild(
  info: SnapshotInfo,
  paths: StatePaths,
  qemu: QemuBinary,
  launch: LaunchOptions = {},
): Promise<PreparedChild> {
  const vmstate = openSync(info.vmstateFile, 'r');
  let proc: VmProcess;
  try {
    proc = await VmProcess.launch(childSpec(info), paths, qemu, Date.now() + RESTORE_TIMEOUT_MS, {
      ...launch,
      snapshot: info.tag,
      inheritFds: [vmstate],
    });
  } finally {
    closeSync(vmstate); // QEMU holds its own copy
  }
  try {
    await proc.unlessExited(loadDeviceState(proc.qmp, 3), 'restore');
  } catch (err) {
    await proc.discard();
    throw proc.failure(
      'FORKD_ERR_CORRUPT',
      `restoring snapshot ${info.tag} failed: ${errorMessage(err).split('\n')[0]}`,
      `the snapshot's files may be damaged: forkd rmi ${info.tag} and take it again`,
    );
  }
  try {
    return { proc, running: false, ports: await proc.unlessExited(exposePorts(proc.qmp, info.meta.ports), 'restore') };
  } catch (err) {
    await proc.cleanup(err instanceof ForkdError && err.consoleLog !== undefined); // keep the log if the error names it
    throw err;
  }
}

/**
 * A warm-pool spare: prepared, resumed and answered once, then primed (the snapshot's `prime`
 * command, if any). Under TCG the first request after a restore pays for translating the guest's
 * hot paths in the new QEMU process; a spare has paid it.
 */
export async function prepareSpare(
  info: SnapshotInfo,
  paths: StatePaths,
  qemu: QemuBinary,
  launch: LaunchOptions = {},
): Promise<PreparedChild> {
  const child = await prepareChild(info, paths, qemu, { ...launch, role: 'spare' });
  try {
    await child.proc.unlessExited(child.proc.qmp.execute('cont'), 'resume');
    const guest = new Guest(child.proc.agent);
    await child.proc.unlessExited(guest.restored(restoredInfo()), 'restore');
    const prime = info.meta.prime;
    if (prime) {
      const r = await child.proc.unlessExited(guest.exec(prime, { timeoutMs: PRIME_TIMEOUT_MS }), 'prime');
      if (r.exitCode !== 0) {
        throw new ForkdError('FORKD_ERR_SNAPSHOT', `prime command of ${info.tag} exited ${r.exitCode}: ${prime}`, {
          hint: `${r.stderr.toString().trim().split('\n').pop() ?? ''} (the recipe's "prime" must succeed in a fresh child)`,
        });
      }
    }
    await Promise.all(Object.values(child.ports).map(touchPort));
  } catch (err) {
    await child.proc.discard();
    throw err;
  }
  return { ...child, running: true };
}

/**
 * Connects to a forwarded port from the host and hangs up: the host-to-guest network path and
 * the server's accept path get translated in the spare, not in the first test's connection.
 */
function touchPort(port: number): Promise<void> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    const done = () => {
      socket.destroy();
      resolve();
    };
    socket.setTimeout(PRIME_TIMEOUT_MS, done);
    socket.once('error', done); // a port nothing listens on yet is the server's business, not the pool's
    socket.once('connect', () => setTimeout(done, 50));
  });
}

/** Resumes a prepared child (if paused) and tells it it was restored: clock, entropy, identity. */
export async function activateChild(child: PreparedChild, startedAt: number, tag: string): Promise<StartedVm> {
  const { proc } = child;
  try {
    if (!child.running) await proc.unlessExited(proc.qmp.execute('cont'), 'resume');
    await proc.unlessExited(new Guest(proc.agent).restored(restoredInfo()), 'restore');
    return new StartedVm(proc, performance.now() - startedAt, child.ports, tag);
  } catch (err) {
    await proc.discard();
    throw err;
  }
}
