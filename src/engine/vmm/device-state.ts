import { setTimeout as sleep } from 'node:timers/promises';
import { ForkdError } from '../../errors.js';
import type { QmpClient } from './qmp.js';

const POLL_MS = 1;
const MIGRATION_TIMEOUT_MS = 60_000;

/** Quotes a path for the `exec:` migration URI, which QEMU runs through /bin/sh. */
export function shellQuote(value: string): string {
  return `'${value.replaceAll("'", "'\\''")}'`;
}

export interface MigrationStatus {
  status?: string;
  'error-desc'?: string;
  /** ms the source was stopped for (live migration), once completed. */
  downtime?: number;
  ram?: { transferred?: number; 'dirty-sync-count'?: number };
}

/** Polls `query-migrate` until the migration completes; throws if it fails or takes too long. */
export async function waitMigration(qmp: QmpClient, what: string): Promise<MigrationStatus> {
  const deadline = Date.now() + MIGRATION_TIMEOUT_MS;
  for (;;) {
    const info = await qmp.execute<MigrationStatus>('query-migrate');
    if (info.status === 'completed') return info;
    if (info.status === 'failed' || info.status === 'cancelled') {
      throw new ForkdError('FORKD_ERR_SNAPSHOT', `${what} failed: ${info['error-desc'] ?? info.status}`, {
        hint: 'check free disk space in the state dir and that the snapshot files are intact',
      });
    }
    if (Date.now() > deadline)
      throw new ForkdError('FORKD_ERR_SNAPSHOT', `${what} did not finish within ${MIGRATION_TIMEOUT_MS} ms`);
    await sleep(POLL_MS);
  }
}

/** RAM already lives in the shared memory file: skip it and write only the device state. */
const IGNORE_SHARED = { capabilities: [{ capability: 'x-ignore-shared', state: true }] };

/** Pauses the VM and writes its device state (not its RAM) to `file`. The VM stays paused. */
export async function saveDeviceState(qmp: QmpClient, file: string): Promise<void> {
  await qmp.execute('stop');
  await qmp.execute('migrate-set-capabilities', IGNORE_SHARED);
  await qmp.execute('migrate', { uri: `exec:cat > ${shellQuote(file)}` });
  await waitMigration(qmp, 'saving device state');
}

/**
 * Loads device state into a VM started with `-S -incoming defer`; it stays paused until `cont`.
 * The state comes from a file descriptor QEMU inherited (no shell and `cat` on the fork path).
 */
export async function loadDeviceState(qmp: QmpClient, inheritedFd: number): Promise<void> {
  await qmp.execute('migrate-set-capabilities', IGNORE_SHARED);
  await qmp.execute('migrate-incoming', { uri: `fd:${inheritedFd}` });
  await waitMigration(qmp, 'loading device state');
}
