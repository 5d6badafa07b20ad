import { debuglog } from '../../common/debug.js';
import { errorMessage } from '../../errors.js';
import type { PreparedChild } from './child.js';

export const MAX_CONSECUTIVE_FAILURES = 3;
const debug = debuglog('pool');

/** A warm pool as the daemon reports it. */
export interface PoolState {
  size: number;
  available: number;
  /** It gave up refilling after MAX_CONSECUTIVE_FAILURES spares in a row failed. */
  failing: boolean;
  /** Why the latest spare failed, its first line (null once one succeeds after it). */
  lastError: string | null;
}

/**
 * Restore shells for one snapshot, prepared ahead of time so a fork skips QEMU start and the
 * device-state load. Bounded by `size`, refilled in the background, reaped by close().
 */
export class WarmPool {
  private readonly ready: PreparedChild[] = [];
  private readonly filling = new Set<Promise<void>>();
  private failures = 0;
  private closed = false;
  lastError: Error | undefined;

  constructor(
    /** The snapshot's tag, for debug lines that have no VM yet. */
    private readonly tag: string,
    readonly size: number,
    private readonly prepare: () => Promise<PreparedChild>,
  ) {
    this.refill();
  }

  get available(): number {
    return this.ready.length;
  }

  /** A prepared shell, or undefined when the pool is empty (the caller prepares one itself). */
  take(): PreparedChild | undefined {
    let child: PreparedChild | undefined;
    while ((child = this.ready.shift()) && child.proc.exitInfo) {
      debug(child.proc.id, 'spare of %s died waiting; discarded', this.tag);
      void child.proc.discard();
    }
    if (child) debug(child.proc.id, 'taken from the pool of %s (%d left)', this.tag, this.ready.length);
    else debug(`pool:${this.tag}`, 'empty: the fork restores cold');
    this.refill();
    return child;
  }

  /** True once it gave up refilling: that many spares failed in a row. */
  get failing(): boolean {
    return this.failures >= MAX_CONSECUTIVE_FAILURES;
  }

  get state(): PoolState {
    return {
      size: this.size,
      available: this.available,
      failing: this.failing,
      lastError: this.lastError ? firstLine(this.lastError) : null,
    };
  }

  private refill(): void {
    while (
      !this.closed &&
      this.ready.length + this.filling.size < this.size &&
      this.failures < MAX_CONSECUTIVE_FAILURES
    ) {
      const fill: Promise<void> = this.prepare()
        .then(async (child) => {
          this.failures = 0;
          this.lastError = undefined;
          if (this.closed) {
            await child.proc.cleanup(false);
            return;
          }
          this.ready.push(child);
          debug(child.proc.id, 'spare of %s ready (%d of %d)', this.tag, this.ready.length, this.size);
        })
        .catch((err: Error) => {
          this.failures++;
          this.lastError = err;
          debug(`pool:${this.tag}`, 'spare failed (%d in a row): %s', this.failures, firstLine(err));
          if (this.failing) debug(`pool:${this.tag}`, 'gave up refilling after %d failures in a row', this.failures);
        })
        .finally(() => {
          this.filling.delete(fill);
          this.refill();
        });
      this.filling.add(fill);
    }
  }

  /** Waits until the pool is full (or gave up after repeated failures). */
  async filled(): Promise<void> {
    while (this.filling.size > 0) await Promise.all(this.filling);
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.filling);
    await Promise.all(this.ready.splice(0).map((child) => child.proc.cleanup(false)));
  }
}

/** An error's message without what follows its first line (a console log's tail). */
function firstLine(err: Error): string {
  return errorMessage(err).split('\n')[0]!;
}
