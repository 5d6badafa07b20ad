import { API } from '../../api/routes.js';
import type { PullReply, SnapshotDetail } from '../../api/types.js';
import { snapshotOptions, snapshotSummary, timingsReply } from '../../api/wire.js';
import type { DaemonContext } from '../context.js';
import { uploadedRecipe, withRecipeDir } from '../recipe-upload.js';
import type { Router } from '../router.js';

export function snapshotRoutes(router: Router, ctx: DaemonContext): void {
  const { engine, ledger, slots, branches } = ctx;
  router
    .on(API.listSnapshots, async () => ({
      status: 200,
      json: [...(await engine.snapshots.list()).map(snapshotSummary), ...branches.list()],
    }))
    .on(API.getSnapshot, async ({ params }) => {
      const pending = branches.get(params.tag);
      if (pending) return { status: 200, json: pending };
      const d = await engine.describe(params.tag);
      const pool = engine.poolState(d.info.tag);
      const detail: SnapshotDetail = {
        ...snapshotSummary(d.info),
        memory_logical_bytes: d.logicalBytes,
        memory_physical_bytes: d.physicalBytes,
        cache_bytes: d.cacheBytes,
        vmstate_bytes: d.info.meta.vmstateBytes,
        ancestors: d.ancestors,
        dependents: d.dependents,
        sandboxes: ledger.list().filter((s) => s.snapshot === d.info.tag).length,
        pool_size: pool.size,
        pool: { size: pool.size, available: pool.available, failing: pool.failing, last_error: pool.lastError },
      };
      return { status: 200, json: detail };
    })
    .on(API.createSnapshot, async ({ body }) => {
      const { tag } = body;
      const upload = uploadedRecipe(body, ctx.allowRecipeUpload);
      const release = slots.acquire(tag);
      try {
        // a recipe brings its own memory size and ports; the body's override them
        const options = snapshotOptions(body);
        const result = upload
          ? await withRecipeDir(engine.paths, upload, (recipe) => engine.snapshot(tag, { ...options, recipe }))
          : await engine.snapshot(tag, options);
        return { status: 201, json: { ...snapshotSummary(result), timings: timingsReply(result.timings) } };
      } finally {
        release();
      }
    })
    .on(API.pull, async ({ body }) => {
      const { ref, tag, force = false } = body;
      const release = slots.acquire(`pull:${ref}`);
      try {
        const r = await ctx.hub.pull(ref, {
          ...(tag !== undefined ? { tag } : {}),
          force,
          httpsOnly: !ctx.allowHttpPull,
        });
        const json: PullReply = { ref: r.ref, tags: r.tags, cached: r.cached };
        return { status: 201, json };
      } finally {
        release();
      }
    })
    .on(API.setPool, async ({ params, body }) => {
      const { size } = body;
      const pool = await engine.warmPool(params.tag, size);
      return { status: 200, json: { tag: params.tag, size, available: pool?.available ?? 0 } };
    })
    .on(API.deleteSnapshot, async ({ params, query }) => {
      const { tag } = params;
      if (branches.get(tag)?.status === 'failed') {
        branches.forget(tag);
        return { status: 204 };
      }
      const release = slots.acquire(tag, false);
      try {
        const flag = (value: string | undefined) => value === 'true' || value === '1';
        await engine.removeSnapshot(tag, { cascade: flag(query.cascade), force: flag(query.force) });
        return { status: 204 };
      } finally {
        release();
      }
    });
}
