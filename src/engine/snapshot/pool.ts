import type { PreparedChild } from './child.js';

const MAX_CONSECUTIVE_FAILURES = 3;

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
    while ((child = this.ready.shift()) && child.proc.exitInfo) void child.proc.discard();
    this.refill();
    return child;
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
          if (this.closed) await child.proc.cleanup(false);
          else this.ready.push(child);
        })
        .catch((err: Error) => {
          this.failures++;
          this.lastError = err;
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
