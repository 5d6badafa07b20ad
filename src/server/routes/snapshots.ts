import type { PullReply, SnapshotDetail, SnapshotSummary } from '../../api/types.js';
import { ForkdError } from '../../errors.js';
import type { SnapshotInfo } from '../../engine/snapshot/store.js';
import { validateTag } from '../../engine/snapshot/tag.js';
import { validatePorts } from '../../engine/vmm/ports.js';
import { field, readJsonObject } from '../body.js';
import type { DaemonContext } from '../context.js';
import type { Router } from '../router.js';

export function snapshotSummary(s: SnapshotInfo): SnapshotSummary {
  return {
    tag: s.tag,
    created: s.meta.created,
    parent: s.meta.parent,
    memory_mib: s.meta.memoryMiB,
    disk_bytes: s.diskBytes,
    accel: s.meta.accel,
    warmup: s.meta.warmup,
    ports: s.meta.ports,
    status: 'ready',
    depth: s.meta.depth ?? 0,
  };
}

const MAX_MEMORY_MIB = 16 * 1024;

export function snapshotRoutes(router: Router, ctx: DaemonContext): void {
  const { engine, registry, slots, branches } = ctx;
  router
    .on('GET', '/v1/snapshots', async () => ({
      status: 200,
      json: [...(await engine.snapshots.list()).map(snapshotSummary), ...branches.list()],
    }))
    .on('GET', '/v1/snapshots/:tag', async ({ params }) => {
      const pending = branches.get(validateTag(params.tag));
      if (pending) return { status: 200, json: pending };
      const d = await engine.describe(params.tag!);
      const detail: SnapshotDetail = {
        ...snapshotSummary(d.info),
        memory_logical_bytes: d.logicalBytes,
        memory_physical_bytes: d.physicalBytes,
        cache_bytes: d.cacheBytes,
        vmstate_bytes: d.info.meta.vmstateBytes,
        ancestors: d.ancestors,
        dependents: d.dependents,
        sandboxes: registry.list().filter((s) => s.snapshot === d.info.tag).length,
        pool_size: engine.poolSize(d.info.tag),
      };
      return { status: 200, json: detail };
    })
    .on('POST', '/v1/snapshots', async ({ req }) => {
      const body = await readJsonObject(req, ['tag', 'recipe', 'memory_mib', 'warmup', 'ports']);
      const tag = validateTag(field<string>(body, 'tag', 'string'));
      const memoryMiB = field<number>(body, 'memory_mib', 'integer');
      if (memoryMiB !== undefined && (memoryMiB < 64 || memoryMiB > MAX_MEMORY_MIB)) {
        throw new ForkdError('FORKD_ERR_BAD_INPUT', `memory_mib must be between 64 and ${MAX_MEMORY_MIB}`);
      }
      const recipe = field<string>(body, 'recipe', 'string');
      if (recipe?.includes('/')) {
        // a path would let an API client run any directory's build commands as the daemon's user
        throw new ForkdError('FORKD_ERR_BAD_INPUT', 'the API takes recipe names (recipes/<name>), not paths', {
          hint: 'build a recipe from a path with the CLI: forkd snapshot --recipe ./path',
        });
      }
      const warmup = field<string>(body, 'warmup', 'string');
      const ports = body.ports === undefined ? undefined : validatePorts(body.ports);
      const release = slots.acquire(tag);
      try {
        // a recipe brings its own memory size and ports; the body's override them
        const result = await engine.snapshot(tag, {
          ...(recipe ? { recipe } : {}),
          ...(memoryMiB ? { memoryMiB } : {}),
          ...(ports ? { ports } : {}),
          ...(warmup ? { warmup } : {}),
        });
        const timings = Object.fromEntries(
          Object.entries(result.timings).map(([k, v]) => [k.replace(/Ms$/, '_ms'), Math.round(v)]),
        );
        return { status: 201, json: { ...snapshotSummary(result), timings } };
      } finally {
        release();
      }
    })
    .on('POST', '/v1/snapshots/pull', async ({ req }) => {
      const body = await readJsonObject(req, ['ref', 'tag', 'force']);
      const ref = field<string>(body, 'ref', 'string');
      if (!ref) {
        throw new ForkdError('FORKD_ERR_BAD_INPUT', 'pull needs "ref": owner/name[@version] or an https:// URL', {
          hint: '{"ref": "acme/postgres@v1"}',
        });
      }
      const tag = field<string>(body, 'tag', 'string');
      const force = field<boolean>(body, 'force', 'boolean') ?? false;
      const release = slots.acquire(`pull:${ref}`);
      try {
        const r = await engine.pull(ref, { ...(tag !== undefined ? { tag: validateTag(tag) } : {}), force });
        const json: PullReply = { ref: r.ref, tags: r.tags, cached: r.cached };
        return { status: 201, json };
      } finally {
        release();
      }
    })
    .on('PUT', '/v1/snapshots/:tag/pool', async ({ req, params }) => {
      const body = await readJsonObject(req, ['size']);
      const size = field<number>(body, 'size', 'integer');
      if (size === undefined) throw new ForkdError('FORKD_ERR_BAD_INPUT', 'the pool needs "size" (0 removes it)');
      const pool = await engine.warmPool(validateTag(params.tag), size);
      return { status: 200, json: { tag: params.tag, size, available: pool?.available ?? 0 } };
    })
    .on('DELETE', '/v1/snapshots/:tag', async ({ params, query }) => {
      const tag = validateTag(params.tag);
      if (branches.get(tag)?.status === 'failed') {
        branches.forget(tag);
        return { status: 204 };
      }
      const release = slots.acquire(tag, false);
      try {
        const flag = (name: string) => query.get(name) === 'true' || query.get(name) === '1';
        await engine.removeSnapshot(tag, { cascade: flag('cascade'), force: flag('force') });
        return { status: 204 };
      } finally {
        release();
      }
    });
}
