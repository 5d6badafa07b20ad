/**
 * A test run's engine side, for any runner: find or start the engine, check its version, make the
 * missing snapshots once, warm pools for the workers, keep the run's lease alive, and tear it all
 * down after the run (its checkpoints, the pools it grew, the daemon it started).
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { Controller, Daemon, ForkdError } from 'forkd-action';
import {
  HEARTBEAT_MS,
  isRunCheckpoint,
  runCheckpoints,
  runOwner,
  type ForkdConnection,
  type ForkdRunOptions,
  type ForkdSnapshotSpec,
  type Runner,
} from './options.js';
import { isRecipeDir, planSnapshots, withAbsoluteRecipes } from './snapshot-plan.js';

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
    // the same for recipe uploads: a recipe's build runs on this host, from this run's own project
    const daemon = await Daemon.start({ allowHttpPull: true, allowRecipeUpload: true, vmsDieWithDaemon: true });
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
    const known = [...existing].filter((t) => !isRunCheckpoint(t));
    throw new ForkdError('FORKD_ERR_NOT_FOUND', `${from}: no snapshot tagged ${tag} on the engine at ${endpoint}`, {
      hint: `${known.length ? `the snapshots there: ${known.join(', ')}` : 'the engine has no snapshots'}; name one of them, or configure it in forkd({ snapshots })`,
    });
  }
}

/** The repository a config file lives in (the nearest directory up with a .git), else the config's own directory. */
export function projectRoot(configDir: string): string {
  for (let dir = configDir; ; dir = dirname(dir)) {
    if (existsSync(join(dir, '.git'))) return dir;
    if (dirname(dir) === dir) return configDir;
  }
}

/** Makes a missing snapshot: pulls its pack, or builds its recipe (a directory's files are sent, never its path). */
async function makeSnapshot(controller: Controller, tag: string, spec: ForkdSnapshotSpec, configDir: string) {
  if (spec.pull) return controller.pull(spec.pull, { tag });
  if (!isRecipeDir(spec.recipe)) return controller.createSnapshot(tag, spec);
  const { recipe, ...rest } = spec;
  return controller.createSnapshot(tag, {
    ...rest,
    recipeDir: resolve(configDir, recipe),
    root: projectRoot(configDir),
  });
}

export interface RunSetup {
  runner: Runner;
  options: ForkdRunOptions;
  /** The runner's worker count: pools are sized to it (at most 4) unless `options.pool`. */
  workers: number;
  /** Where the config file is: recipe directories are relative to it, and must stay in its repository. */
  configDir: string;
  /** Told of long steps (a snapshot being made). */
  log?: (line: string) => void;
}

export interface Run {
  connection: ForkdConnection;
  /** Gives back what the run took; safe to call once the run is over, whatever happened. */
  teardown(): Promise<void>;
}

export async function startRun({ runner, options, workers, configDir, log = () => {} }: RunSetup): Promise<Run> {
  const plan = planSnapshots(withAbsoluteRecipes(options, configDir));
  const runId = randomBytes(6).toString('hex');
  const owner = runOwner(runner, runId);
  const { controller, daemon } = await connect();
  /** Pool sizes to put back on teardown: on someone else's daemon (the Action's), the size it had. */
  const pooled = new Map<string, number>();
  let connection: ForkdConnection;
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
      log(`forkd: making snapshot ${tag} (${spec.pull ?? spec.recipe ?? 'base image'}), once: later runs reuse it`);
      await makeSnapshot(controller, tag, spec, configDir);
      existing.add(tag);
    }
    requireTags(
      [
        [options.sandbox && plan.sandbox, `forkd({ sandbox: '${options.sandbox}' })`],
        [options.postgres && plan.postgres, `forkd({ postgres: '${options.postgres}' })`],
        [options.app && plan.app, `forkd({ app: '${options.app}' })`],
      ],
      existing,
      controller.endpoint,
    );
    const size = options.pool ?? Math.min(workers, 4);
    for (const tag of new Set(Object.values(plan.tags))) {
      const detail = await controller.getSnapshot(tag);
      const before = detail.status === 'ready' ? detail.pool_size : 0;
      if (size > before) {
        await controller.setPool(tag, size);
        pooled.set(tag, before);
      }
    }
    connection = {
      endpoint: controller.endpoint,
      token: controller.token,
      runner,
      runId,
      sandbox: plan.sandbox,
      postgres: plan.postgres,
      app: plan.app,
      tags: plan.tags,
    };
  } catch (err) {
    await controller.close();
    await daemon?.close();
    throw err;
  }
  // the run's sandboxes live on a lease: renewed while this process lives (404: none held right now)
  const heartbeat = setInterval(() => void controller.heartbeat(owner).catch(() => {}), HEARTBEAT_MS).unref();
  let done: Promise<void> | undefined;
  const teardown = async () => {
    clearInterval(heartbeat);
    await controller.deleteOwner(owner).catch(() => {});
    const ours = runCheckpoints(runner, runId);
    const left = (await controller.listSnapshots().catch(() => [])).filter((s) => s.tag.startsWith(ours));
    for (const { tag } of left) await controller.deleteSnapshot(tag, { cascade: true }).catch(() => {});
    // a daemon we started takes its sandboxes and pools with it; on someone else's, put the pools back
    if (!daemon) for (const [tag, before] of pooled) await controller.setPool(tag, before).catch(() => {});
    await controller.close();
    await daemon?.close();
  };
  return { connection, teardown: () => (done ??= teardown()) };
}
