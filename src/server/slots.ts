import { ForkdError } from '../errors.js';

/**
 * Caps heavy operations (snapshots, forks, later branches): a global limit answered with 503 when
 * full, and one operation per tag at a time answered with 409. The release function is
 * idempotent; callers release in `finally`, so every path frees its slot.
 */
export class OperationSlots {
  private inFlight = 0;
  private readonly tags = new Set<string>();

  constructor(readonly cap: number) {}

  get active(): number {
    return this.inFlight;
  }

  /** `heavy: false` only guards the tag (e.g. a delete), without taking one of the capped slots. */
  acquire(tag?: string, heavy = true): () => void {
    if (heavy && this.inFlight >= this.cap) {
      throw new ForkdError('FORKD_ERR_BUSY', `at the cap of ${this.cap} heavy operations in flight`, {
        hint: 'retry shortly, or start forkd serve with a higher --max-heavy',
      });
    }
    if (tag !== undefined && this.tags.has(tag)) {
      throw new ForkdError('FORKD_ERR_CONFLICT', `an operation on ${tag} is already in progress`, {
        hint: 'wait for it to finish',
      });
    }
    if (heavy) this.inFlight++;
    if (tag !== undefined) this.tags.add(tag);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      if (heavy) this.inFlight--;
      if (tag !== undefined) this.tags.delete(tag);
    };
  }
}
