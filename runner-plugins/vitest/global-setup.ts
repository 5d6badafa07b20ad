import { Controller, Daemon, ForkdError } from 'forkd-action';
import { CHECKPOINT_PREFIX, OPTIONS_ENV, type ForkdConnection, type ForkdVitestOptions } from './options.js';

interface Project {
  provide(key: 'forkd', value: ForkdConnection): void;
  config: { maxWorkers?: number | string };
}

declare module 'vitest' {
  export interface ProvidedContext {
    forkd: ForkdConnection;
  }
}

/** An engine the run can use: FORKD_ENDPOINT, else a local `forkd serve`, else one started for the run. */
async function connect(): Promise<{ controller: Controller; daemon?: Daemon }> {
  if (process.env.FORKD_ENDPOINT) return { controller: new Controller() };
  try {
    const controller = new Controller();
    await controller.health();
    return { controller };
  } catch {
    const daemon = await Daemon.start();
    return { controller: new Controller({ endpoint: daemon.endpoint, token: daemon.token }), daemon };
  }
}

export default async function setup(project: Project): Promise<() => Promise<void>> {
  const raw = process.env[OPTIONS_ENV];
  if (!raw) {
    throw new ForkdError('FORKD_ERR_BAD_INPUT', 'forkd global setup has no options', {
      hint: "add the plugin to vitest.config.ts: plugins: [forkd({ snapshots: { pg: { recipe: 'postgres' } } })]",
    });
  }
  const options = JSON.parse(raw) as ForkdVitestOptions;
  const tags = Object.keys(options.snapshots);
  if (!tags.length) throw new ForkdError('FORKD_ERR_BAD_INPUT', 'forkd({ snapshots }) names no snapshot');
  const { controller, daemon } = await connect();
  /** Pool sizes to put back on teardown: on someone else's daemon (the Action's), the size it had. */
  const pooled = new Map<string, number>();
  try {
    const existing = new Set((await controller.listSnapshots()).map((s) => s.tag));
    for (const [tag, spec] of Object.entries(options.snapshots)) {
      if (existing.has(tag)) continue;
      if (spec.pull) await controller.pull(spec.pull, { tag });
      else await controller.createSnapshot(tag, spec);
    }
    const workers = Number(project.config.maxWorkers) || 2;
    const size = options.pool ?? Math.min(workers, 4);
    for (const tag of tags) {
      const detail = await controller.getSnapshot(tag);
      const before = detail.status === 'ready' ? detail.pool_size : 0;
      if (size > before) {
        await controller.setPool(tag, size);
        pooled.set(tag, before);
      }
    }
    const postgres =
      options.postgres ?? Object.entries(options.snapshots).find(([, s]) => s.recipe === 'postgres')?.[0] ?? null;
    project.provide('forkd', {
      endpoint: controller.endpoint,
      token: controller.token,
      sandbox: options.sandbox ?? tags[0]!,
      postgres,
    });
  } catch (err) {
    await controller.close();
    await daemon?.close();
    throw err;
  }
  return async () => {
    const left = (await controller.listSnapshots().catch(() => [])).filter((s) => s.tag.startsWith(CHECKPOINT_PREFIX));
    for (const { tag } of left) await controller.deleteSnapshot(tag, { cascade: true }).catch(() => {});
    // a daemon we started takes its sandboxes and pools with it; on someone else's, put the pools back
    if (!daemon) for (const [tag, before] of pooled) await controller.setPool(tag, before).catch(() => {});
    await controller.close();
    await daemon?.close();
  };
}
