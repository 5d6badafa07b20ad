/**
 * The GitHub Action: one bundle (dist/action.mjs) for both phases. The main step prepares the
 * runner, gets the warmed parent (built from a recipe, or pulled), and leaves `forkd serve`
 * running for the job's later steps; the post step (always run, even when the job failed or was
 * cancelled) stops it, reaps every VM, and writes the job summary. Post never throws.
 */
import * as core from '@actions/core';
import { exec } from '@actions/exec';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { Controller } from '../client/controller.js';
import { packageRoot } from '../common/package-root.js';
import { ForkdError, errorMessage } from '../errors.js';
import {
  cacheServiceAvailable,
  imagesBuildId,
  imagesEntry,
  restoreEntry,
  saveEntry,
  snapshotsEntry,
  type CacheEntry,
} from './cache.js';
import { startDaemon, stopDaemon } from './daemon.js';
import { resolveEngine } from './engine-release.js';
import { ForkdCli } from './forkd-cli.js';
import { getInputs } from './inputs.js';
import { reapJobProcesses } from './job-processes.js';
import { chooseAccel, prepareKvm, refuseUnsupportedRunner } from './runner-host.js';
import { isPost, loadActionState, loadJobEngine, markMainStarted, saveActionState, saveJobEngine } from './state.js';
import { writeSummary } from './summary.js';

/** The runner follows a cancel's SIGINT with SIGTERM after 7.5 s: the commands get less than that. */
const CANCEL_GRACE_MS = 5_000;
const STRAGGLER_GRACE_MS = 5_000;

/** The engine's CLI for this job; set once the engine is chosen, stopped if the job is cancelled. */
let cli: ForkdCli | undefined;

async function main(): Promise<void> {
  refuseUnsupportedRunner();
  markMainStarted();
  const inputs = getInputs();
  const home = process.env.FORKD_HOME || join(process.env.RUNNER_TEMP || tmpdir(), 'forkd');
  mkdirSync(home, { recursive: true });
  core.exportVariable('FORKD_HOME', home);
  process.env.FORKD_HOME = home;
  const engine = await resolveEngine(inputs.version);
  saveJobEngine({ home, script: engine.script });
  const forkd = (cli = new ForkdCli(engine.script));
  const run = (title: string, args: string[]) => core.group(title, () => forkd.run(args));
  await core.group('Preparing the runner', async () => {
    await prepareKvm(inputs.accel);
    await exec('bash', [join(packageRoot, 'scripts/host-packages.sh')]);
  });
  /** The recipes to snapshot, each under its own name; `base` needs no image of its own. */
  const snapshots = [
    ...new Set(inputs.snapshot.kind === 'recipe' ? [inputs.snapshot.recipe, ...inputs.recipes] : inputs.recipes),
  ];
  const recipes = snapshots.filter((r) => r !== 'base');
  /** Cache entries that missed: saved by the post step, once the job has used them. */
  const toSave: CacheEntry[] = [];
  const images = inputs.cache && cacheServiceAvailable() ? imagesEntry(home, engine, recipes) : undefined;
  const imagesRestored = images ? await restoreEntry(images) : false;
  if (images && !imagesRestored) toSave.push(images);
  // recipes first: a name that does not exist fails here (listing the recipes), not after the kernel build
  for (const recipe of recipes) await run(`Building the ${recipe} image`, ['build', recipe]);
  await run('Building the guest kernel and base image', ['build', 'base']);
  const host = await core.group('Choosing the accelerator', () => chooseAccel(forkd, inputs.accel));
  const tags = [...new Set(snapshots.map((recipe) => basename(recipe)))];
  const buildId = images && tags.length ? imagesBuildId(home, imagesRestored) : undefined;
  if (buildId) {
    const entry = snapshotsEntry(home, buildId, tags, host);
    if (!(await restoreEntry(entry))) toSave.push(entry);
  }
  const exists = (tag: string) => existsSync(join(home, 'snapshots', tag));
  for (const recipe of snapshots) {
    const tag = basename(recipe);
    if (exists(tag)) core.info(`forkd: snapshot ${tag} is already there`);
    else if (recipe === 'base') await run('Snapshot base', ['snapshot', '--tag', 'base']);
    else await run(`Snapshot ${tag}`, ['snapshot', '--tag', tag, '--recipe', recipe]);
  }
  if (inputs.snapshot.kind === 'hub' && !exists(inputs.tag)) {
    await run(`Pull ${inputs.snapshot.ref}`, ['pull', inputs.snapshot.ref, '--tag', inputs.tag]);
  }
  const daemon = await core.group('Starting forkd serve', () => startDaemon(engine.script, home));
  saveActionState({
    daemonPid: daemon.pid,
    home,
    script: engine.script,
    daemonLog: daemon.log,
    endpoint: daemon.endpoint,
    tag: inputs.tag,
    accel: host.accel,
    toSave,
  });
  core.setSecret(daemon.token);
  const client = new Controller({ endpoint: daemon.endpoint, token: daemon.token, clientVersion: engine.version });
  try {
    await client.ensureCompatible(); // the engine later steps reach is the one chosen above
    core.exportVariable('FORKD_ENDPOINT', daemon.endpoint);
    core.exportVariable('FORKD_TOKEN', daemon.token);
    // the Vitest plugin forks this snapshot instead of taking its own of the same recipe or pack
    core.exportVariable('FORKD_SNAPSHOT', inputs.tag);
    core.exportVariable(
      'FORKD_SNAPSHOT_SOURCE',
      inputs.snapshot.kind === 'recipe' ? inputs.snapshot.recipe : inputs.snapshot.ref,
    );
    // a snapshot restores only on the accelerator it was taken with (a pack from another is refused)
    core.setOutput('endpoint', daemon.endpoint);
    core.setOutput('snapshot-tag', inputs.tag);
    core.setOutput('accel', host.accel);
    if (inputs.poolSize > 0) await client.setPool(inputs.tag, inputs.poolSize);
  } finally {
    await client.close();
  }
}

/** A cancelled job: the runner signals this step; its commands are stopped so they reap their VMs. */
function onCancel(signal: NodeJS.Signals): void {
  process.removeAllListeners('SIGINT').removeAllListeners('SIGTERM');
  core.error(`forkd: ${signal}: the job was cancelled; stopping the engine's commands (the post step reaps the rest)`);
  void (cli?.stopAll(CANCEL_GRACE_MS) ?? Promise.resolve()).finally(() => process.exit(1));
}

/** Stops the daemon (it kills its VMs), then anything of this job's still running, whatever main got to. */
async function post(): Promise<void> {
  const engine = loadJobEngine();
  if (!engine) {
    core.info('forkd: the main step started nothing, so there is nothing to stop');
    return;
  }
  const state = loadActionState();
  const metrics = state ? await stopDaemon(state) : '';
  const left = await reapJobProcesses(engine.home, engine.script, STRAGGLER_GRACE_MS);
  if (left) core.warning(`forkd: stopped ${left} process(es) the job left running`);
  if (!state) {
    core.info('forkd: the main step did not get as far as starting the engine');
    return;
  }
  await writeSummary(state, metrics);
  for (const entry of state.toSave) await saveEntry(entry);
  await core.group('forkd serve log (tail)', async () => {
    if (existsSync(state.daemonLog)) core.info(readFileSync(state.daemonLog, 'utf8').slice(-4000));
  });
}

const describe = (err: unknown) => (err instanceof ForkdError ? err.describe() : errorMessage(err));

if (isPost()) {
  await post().catch((err: unknown) => core.warning(`forkd teardown: ${describe(err)}`));
} else {
  process.once('SIGINT', onCancel).once('SIGTERM', onCancel);
  await main().catch((err: unknown) => core.setFailed(describe(err)));
}
