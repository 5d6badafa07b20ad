import { ForkdError } from '../../errors.js';
import type { Accel, VmSpec } from '../vmm/qemu-args.js';
import { validateTag } from './tag.js';

export const SNAPSHOT_FORMAT = 1;
export const MACHINE_TYPE = 'microvm';

/** What a snapshot needs to be restored, and what it was made from. Stored as meta.json. */
export interface SnapshotMeta {
  format: number;
  tag: string;
  created: string;
  /** Random per snapshot: a diff link pins its parent by it, so a parent taken again under the same tag is noticed. */
  id?: string;
  /**
   * The snapshot this one depends on: set only for diff links, whose memory is their parent's
   * plus `memory.diff`. Null for a root (its memory.bin is all of it).
   */
  parent: string | null;
  /**
   * The parent as this link was made from it: its `id` (a parent taken again under its tag) and the
   * sha256 of its content (a parent changed in place), checked when the link's memory is assembled.
   */
  parentPin?: { id: string; sha256: string };
  /** Links from the root: 0 for a root. */
  depth?: number;
  /** How a BRANCH made this snapshot. */
  branch?: { from: string; mode: 'full' | 'diff' | 'live'; pauseMs: number };
  image: { name: string; kernelHash: string; initrdHash: string; rootfsHash?: string };
  memoryMiB: number;
  vcpus: number;
  accel: Accel;
  qemuVersion: string;
  machine: string;
  /** The host CPU a KVM snapshot was taken on (host-cpu.ts); absent under TCG, where it does not matter. */
  cpu?: string;
  /** The VM's hardware exactly as the parent had it: a child's command line must match it. */
  vm: Pick<VmSpec, 'kernel' | 'initrd' | 'rootfs' | 'append' | 'tcgTbSizeMiB' | 'net'>;
  /** Guest TCP ports each child exposes on 127.0.0.1 (a host port of its own per child). */
  ports: number[];
  warmup: string | null;
  /** The recipe's readiness check, polled after the warm-up: with the rest, how to take it again. */
  ready?: { command: string; timeoutMs: number };
  /**
   * Run once in every warm-pool spare after its restore, to warm the code paths a first request
   * takes (under TCG each new QEMU process translates the guest's code afresh). Absent: none.
   */
  prime?: string;
  /** Bytes of device state, checked before restore (a truncated file is refused). */
  vmstateBytes: number;
}

export function parseMeta(text: string, where: string): SnapshotMeta {
  let meta: SnapshotMeta;
  try {
    meta = JSON.parse(text) as SnapshotMeta;
  } catch (err) {
    throw new ForkdError('FORKD_ERR_CORRUPT', `${where} is not valid JSON`, {
      hint: 'remove the snapshot (forkd rmi) and take it again',
      cause: err,
    });
  }
  const fields: Array<[keyof SnapshotMeta, string]> = [
    ['tag', 'string'],
    ['created', 'string'],
    ['memoryMiB', 'number'],
    ['vcpus', 'number'],
    ['accel', 'string'],
    ['qemuVersion', 'string'],
    ['machine', 'string'],
    ['vm', 'object'],
    ['image', 'object'],
    ['vmstateBytes', 'number'],
  ];
  const bad = fields.filter(([key, type]) => typeof meta?.[key] !== type).map(([key]) => key);
  if (bad.length || meta.format !== SNAPSHOT_FORMAT) {
    throw new ForkdError(
      'FORKD_ERR_CORRUPT',
      `${where} is not a forkd snapshot (format ${meta?.format}; bad fields: ${bad.join(', ') || 'none'})`,
      {
        hint: 'remove the snapshot (forkd rmi) and take it again',
      },
    );
  }
  validateTag(meta.tag);
  return { ...meta, ports: Array.isArray(meta.ports) ? meta.ports : [] };
}

export interface HostFacts {
  accel: Accel;
  qemuVersion: string;
  /** The host CPU (host-cpu.ts): it matters under KVM, where guests run with `-cpu host`. */
  cpu?: string;
}

/** What keeps this host from restoring a snapshot faithfully, one phrase each; empty when nothing does. */
export function incompatibilities(
  facts: Pick<SnapshotMeta, 'accel' | 'qemuVersion' | 'machine' | 'cpu'>,
  host: HostFacts,
): string[] {
  const diffs: string[] = [];
  if (facts.accel !== host.accel) diffs.push(`accelerator ${facts.accel} (this host runs ${host.accel})`);
  if (facts.qemuVersion !== host.qemuVersion)
    diffs.push(`QEMU ${facts.qemuVersion} (this host has ${host.qemuVersion})`);
  if (facts.machine !== MACHINE_TYPE) diffs.push(`machine ${facts.machine} (forkd runs ${MACHINE_TYPE})`);
  if (facts.accel === 'kvm' && host.accel === 'kvm' && facts.cpu && host.cpu && facts.cpu !== host.cpu)
    diffs.push(`CPU ${facts.cpu} under KVM (this host has ${host.cpu})`);
  return diffs;
}

/** Refuses a restore this host cannot do faithfully; the message says what differs. */
export function checkCompatible(
  facts: Pick<SnapshotMeta, 'tag' | 'accel' | 'qemuVersion' | 'machine' | 'cpu'>,
  host: HostFacts,
  what = `snapshot ${facts.tag}`,
  fix = `take the snapshot again on this host (forkd snapshot --tag ${facts.tag}), or run where it was taken`,
): void {
  const diffs = incompatibilities(facts, host);
  if (diffs.length) {
    throw new ForkdError('FORKD_ERR_INCOMPATIBLE', `${what} was taken with ${diffs.join(', ')}`, {
      hint: `${fix}${facts.accel !== host.accel ? ` (FORKD_ACCEL=${facts.accel} forces the accelerator)` : ''}`,
    });
  }
}
