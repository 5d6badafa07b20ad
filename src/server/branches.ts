import { ForkdError } from '../errors.js';

export interface PendingBranch {
  tag: string;
  status: 'writing' | 'failed';
  /** The sandbox being copied. */
  sandbox: string;
  error?: { code: string; error: string; hint?: string };
}

/**
 * Branches answered before their snapshot was written (`wait: false`): `writing` until the
 * snapshot is committed (then it is an ordinary snapshot), or `failed` with the reason, kept until
 * the tag is used again or deleted.
 */
export class BranchTracker {
  private readonly branches = new Map<string, PendingBranch>();
  private readonly running = new Set<Promise<unknown>>();

  get(tag: string): PendingBranch | undefined {
    return this.branches.get(tag);
  }

  list(): PendingBranch[] {
    return [...this.branches.values()];
  }

  forget(tag: string): void {
    this.branches.delete(tag);
  }

  track(tag: string, sandbox: string, done: Promise<unknown>): void {
    this.branches.set(tag, { tag, status: 'writing', sandbox });
    const settled = done.then(
      () => this.branches.delete(tag),
      (err: unknown) => {
        const e =
          err instanceof ForkdError
            ? err
            : new ForkdError('FORKD_ERR_INTERNAL', String((err as Error)?.message ?? err));
        this.branches.set(tag, { tag, status: 'failed', sandbox, error: e.toJSON() });
      },
    );
    this.running.add(settled);
    void settled.finally(() => this.running.delete(settled));
  }

  /** Resolves once every branch in flight has finished (on daemon shutdown). */
  async settled(): Promise<void> {
    await Promise.all(this.running);
  }
}
