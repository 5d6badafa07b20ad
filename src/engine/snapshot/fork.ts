import { availableParallelism } from 'node:os';
import { MAX_FORK } from '../../api/schemas.js';
import { debuglog } from '../../common/debug.js';
import { errorMessage, ForkdError } from '../../errors.js';
import type { StatePaths } from '../../common/state-dir.js';
import type { HostAccel } from '../host-accel.js';
import type { QemuBinary } from '../vmm/qemu-binary.js';
import type { LaunchOptions } from '../vmm/vm-process.js';
import type { StartedVm } from '../vmm/vm.js';
import { ensureFullMemory } from './chain.js';
import { activateChild, prepareChild, prepareSpare, type PreparedChild } from './child.js';
import { checkCompatible } from './meta.js';
import { MAX_CONSECUTIVE_FAILURES, WarmPool, type PoolState } from './pool.js';
import type { SnapshotInfo, SnapshotStore } from './store.js';

/**
 * Children restored at once: one per core. More only contend (measured on 2 cores, N=16 under
 * TCG: 2 at a time 1.15 s wall, 8 at a time 1.6 s), since each restore is CPU-bound.
 */
const FORK_CONCURRENCY = Math.max(2, availableParallelism());
const debug = debuglog('fork');

async function mapLimited<T, R>(
  items: T[],
  limit: number,
  fn: (item: T) => Promise<R>,
): Promise<PromiseSettledResult<R>[]> {
  const results: PromiseSettledResult<R>[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]!).then(
        (value) => ({ status: 'fulfilled', value }) as const,
        (reason: unknown) => ({ status: 'rejected', reason }) as const,
      );
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/** Forks children from snapshots, from their warm pools where one is kept. */
export class Forker {
  private readonly pools = new Map<string, WarmPool>();
  /** The latest pool change of each tag, settled or not: the next one waits for it. */
  private readonly poolChanges = new Map<string, Promise<unknown>>();
  /** Forks under way: close() waits for them. */
  private readonly forking = new Set<Promise<unknown>>();
  /** Set by close(): no pool is made and no child handed out after it. */
  private closed = false;

  constructor(
    private readonly paths: StatePaths,
    private readonly snapshots: SnapshotStore,
    private readonly accel: HostAccel,
    /** How children are launched; the daemon lets them outlive it (it adopts them on restart). */
    private readonly launch: LaunchOptions,
  ) {}

  /**
   * A snapshot this host can restore, with whole files, and the QEMU to restore it with. The
   * verdict is for the snapshot's own images, so an unpacked snapshot restores without a build.
   */
  private async restorable(tag: string): Promise<{ info: SnapshotInfo; qemu: QemuBinary }> {
    const info = await this.snapshots.get(tag);
    const { host, qemu } = await this.accel.facts(info.meta.vm);
    checkCompatible(info.meta, host);
    await ensureFullMemory(this.snapshots, info);
    await this.snapshots.verify(info);
    return { info, qemu };
  }

  /**
   * Keeps `size` restore shells of `tag` ready so forks skip QEMU start. Returns once the pool is
   * full; throws when it gave up instead (spares kept failing), leaving it in place, failing, for
   * poolState() to report. Size 0 removes the pool.
   */
  async warmPool(tag: string, size: number): Promise<WarmPool | undefined> {
    if (!Number.isInteger(size) || size < 0 || size > MAX_FORK) {
      throw new ForkdError('FORKD_ERR_BAD_INPUT', `pool size ${size} is not an integer between 0 and ${MAX_FORK}`);
    }
    if (this.closed) throw closingError();
    return this.changePool(tag, () => this.resizePool(tag, size));
  }

  /**
   * Runs one change of a tag's pool at a time: two interleaved would both set a pool, and the one
   * overwritten in the map would keep its spares running with nobody to stop them.
   */
  private changePool<T>(tag: string, change: () => Promise<T>): Promise<T> {
    const next = (this.poolChanges.get(tag) ?? Promise.resolve()).then(change);
    this.poolChanges.set(
      tag,
      next.catch(() => {}),
    );
    return next;
  }

  private async resizePool(tag: string, size: number): Promise<WarmPool | undefined> {
    const { info, qemu } = await this.restorable(tag);
    await this.closePool(tag);
    if (size === 0) return undefined;
    if (this.closed) throw closingError();
    const pool = new WarmPool(tag, size, () => prepareSpare(info, this.paths, qemu, this.launch));
    this.pools.set(tag, pool);
    await pool.filled();
    if (this.closed) throw closingError(); // close() stopped it while it filled
    if (pool.failing) {
      const cause = pool.lastError;
      throw new ForkdError(
        cause instanceof ForkdError ? cause.code : 'FORKD_ERR_SNAPSHOT',
        `the warm pool of ${tag} gave up: its spares failed ${MAX_CONSECUTIVE_FAILURES} times in a row (${pool.available} of ${size} ready); the last: ${pool.state.lastError}`,
        {
          hint: `forks of ${tag} restore cold meanwhile; fix the cause, then set the pool again (size 0 removes it)`,
          cause,
        },
      );
    }
    return pool;
  }

  /**
   * Forks `n` children from a snapshot: each its own QEMU with the snapshot's memory mapped
   * copy-on-write, resumed and told it was restored. All or nothing: if one fails, the others
   * are killed and the error is thrown.
   */
  fork(tag: string, n = 1): Promise<StartedVm[]> {
    if (this.closed) return Promise.reject(closingError());
    const forked = this.forkChildren(tag, n);
    const settled = forked.catch(() => {});
    this.forking.add(settled);
    void settled.finally(() => this.forking.delete(settled));
    return forked;
  }

  private async forkChildren(tag: string, n: number): Promise<StartedVm[]> {
    if (!Number.isInteger(n) || n < 1 || n > MAX_FORK) {
      throw new ForkdError('FORKD_ERR_LIMIT', `cannot fork ${n} children: n must be an integer from 1 to ${MAX_FORK}`, {
        hint: 'fork in batches if you need more',
      });
    }
    const { info, qemu } = await this.restorable(tag);
    const pool = this.pools.get(tag);
    const results = await mapLimited(Array.from({ length: n }), FORK_CONCURRENCY, async () => {
      if (this.closed) throw closingError(); // the children not started yet are not started
      const startedAt = performance.now();
      const spare = pool?.take();
      const child: PreparedChild = spare ?? (await prepareChild(info, this.paths, qemu, this.launch));
      const vm = await activateChild(child, startedAt, tag);
      debug(
        vm.id,
        'forked from %s (%s) in %d ms',
        tag,
        spare ? 'a warm spare' : 'restored cold',
        Math.round(vm.readyMs),
      );
      return vm;
    });
    const children = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed || this.closed) {
      const reason: unknown = failed ? failed.reason : closingError(); // closed meanwhile: nobody takes them
      debug(
        `fork:${tag}`,
        '%d of %d children failed; killing the rest: %s',
        n - children.length,
        n,
        errorMessage(reason).split('\n')[0],
      );
      await Promise.all(children.map((child) => child.kill()));
      throw reason;
    }
    return children;
  }

  /** Stops `tag`'s warm pool, if it has one. */
  dropPool(tag: string): Promise<void> {
    return this.changePool(tag, () => this.closePool(tag));
  }

  private async closePool(tag: string): Promise<void> {
    const pool = this.pools.get(tag);
    this.pools.delete(tag);
    await pool?.close();
  }

  /** `tag`'s warm pool: its size (0: none), spares ready, and whether it gave up refilling. */
  poolState(tag: string): PoolState {
    return this.pools.get(tag)?.state ?? { size: 0, available: 0, failing: false, lastError: null };
  }

  /** Warm pools that gave up refilling. */
  get failingPools(): number {
    return [...this.pools.values()].filter((pool) => pool.failing).length;
  }

  /** Restore shells waiting in all warm pools. */
  get pooledChildren(): number {
    return [...this.pools.values()].reduce((sum, pool) => sum + pool.available, 0);
  }

  /**
   * Stops the warm pools and refuses new pools and forks. Pool changes and forks under way end
   * first: a fork still restoring kills its children and throws (children handed out before are
   * the caller's to kill).
   */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.pools.values()].map((pool) => pool.close()));
    await Promise.all([...this.poolChanges.values(), ...this.forking]);
    this.pools.clear();
  }
}

function closingError(): ForkdError {
  return new ForkdError('FORKD_ERR_BUSY', 'the engine is closing: no more forks or warm-pool changes', {
    hint: 'the daemon is shutting down; start it again and retry',
  });
}
