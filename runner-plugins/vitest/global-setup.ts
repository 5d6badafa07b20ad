import { randomBytes } from 'node:crypto';
import { Controller, Daemon, ForkdError } from 'forkd-action';
import {
  CHECKPOINT_PREFIX,
  HEARTBEAT_MS,
  OPTIONS_ENV,
  runCheckpoints,
  runOwner,
  type ForkdConnection,
  type ForkdVitestOptions,
} from './options.js';
import { planSnapshots } from './snapshot-plan.js';

interface Project {
  provide(key: 'forkd', value: ForkdConnection): void;
  config: { maxWorkers?: number | string };
}

/** An engine the run can use: FORKD_ENDPOINT, else a local `forkd serve`, else one started for the run. */
async function connect(): Promise<{ controller: Controller; daemon?: Daemon }> {
  if (process.env.FORKD_ENDPOINT) return { controller: new Controller() };
  let local: Controller | undefined;
  try {
    local = new Controller();
    await local.health();
    return { controller: local };
  } catch {
    await local?.close();
    // the run's own daemon: only this run holds its token, so the config's own http:// pack URLs are not a
    // token holder's way to reach internal services (what the https-only rule guards against); its VMs
    // die with this process, even a SIGKILLed one
    const daemon = await Daemon.start({ allowHttpPull: true, vmsDieWithDaemon: true });
    return { controller: new Controller({ endpoint: daemon.endpoint, token: daemon.token }), daemon };
  }
}

/** Fails when a tag the run forks is not on the engine, listing the ones that are. */
function requireTags(
  wanted: Array<[tag: string | null | undefined, from: string]>,
  existing: Set<string>,
  endpoint: string,
) {
  for (const [tag, from] of wanted) {
    if (!tag || existing.has(tag)) continue;
    const known = [...existing].filter((t) => !t.startsWith(CHECKPOINT_PREFIX));
    throw new ForkdError('FORKD_ERR_NOT_FOUND', `${from}: no snapshot tagged ${tag} on the engine at ${endpoint}`, {
      hint: `${known.length ? `the snapshots there: ${known.join(', ')}` : 'the engine has no snapshots'}; name one of them, or configure it in forkd({ snapshots })`,
    });
  }
}

export default async function setup(project: Project): Promise<() => Promise<void>> {
  const raw = process.env[OPTIONS_ENV];
  if (!raw) {
    throw new ForkdError('FORKD_ERR_BAD_INPUT', 'forkd global setup has no options', {
      hint: "add the plugin to vitest.config.ts: plugins: [forkd({ snapshots: { postgres: { recipe: 'postgres' } } })]",
    });
  }
  const options = JSON.parse(raw) as ForkdVitestOptions;
  const plan = planSnapshots(options);
  const runId = randomBytes(6).toString('hex');
  const owner = runOwner(runId);
  const { controller, daemon } = await connect();
  /** Pool sizes to put back on teardown: on someone else's daemon (the Action's), the size it had. */
  const pooled = new Map<string, number>();
  try {
    await controller.ensureCompatible();
    const existing = new Set((await controller.listSnapshots()).map((s) => s.tag));
    requireTags(
      [[plan.action, `FORKD_SNAPSHOT=${plan.action} (the forkd Action's snapshot)`]],
      existing,
      controller.endpoint,
    );
    for (const [tag, spec] of Object.entries(plan.make)) {
      if (existing.has(tag)) continue;
      if (spec.pull) await controller.pull(spec.pull, { tag });
      else await controller.createSnapshot(tag, spec);
      existing.add(tag);
    }
    requireTags(
      [
        [options.sandbox && plan.sandbox, `forkd({ sandbox: '${options.sandbox}' })`],
        [options.postgres && plan.postgres, `forkd({ postgres: '${options.postgres}' })`],
      ],
      existing,
      controller.endpoint,
    );
    const workers = Number(project.config.maxWorkers) || 2;
    const size = options.pool ?? Math.min(workers, 4);
    for (const tag of new Set(Object.values(plan.tags))) {
      const detail = await controller.getSnapshot(tag);
      const before = detail.status === 'ready' ? detail.pool_size : 0;
      if (size > before) {
        await controller.setPool(tag, size);
        pooled.set(tag, before);
      }
    }
    project.provide('forkd', {
      endpoint: controller.endpoint,
      token: controller.token,
      runId,
      sandbox: plan.sandbox,
      postgres: plan.postgres,
      tags: plan.tags,
    });
  } catch (err) {
    await controller.close();
    await daemon?.close();
    throw err;
  }
  // the run's sandboxes live on a lease: renewed while this process lives (404: none held right now)
  const heartbeat = setInterval(() => void controller.heartbeat(owner).catch(() => {}), HEARTBEAT_MS).unref();
  return async () => {
    clearInterval(heartbeat);
    await controller.deleteOwner(owner).catch(() => {});
    const ours = runCheckpoints(runId);
    const left = (await controller.listSnapshots().catch(() => [])).filter((s) => s.tag.startsWith(ours));
    for (const { tag } of left) await controller.deleteSnapshot(tag, { cascade: true }).catch(() => {});
    // a daemon we started takes its sandboxes and pools with it; on someone else's, put the pools back
    if (!daemon) for (const [tag, before] of pooled) await controller.setPool(tag, before).catch(() => {});
    await controller.close();
    await daemon?.close();
  };
}
