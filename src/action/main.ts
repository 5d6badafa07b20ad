/**
 * The GitHub Action: one bundle (dist/action.mjs) for both phases. The main step prepares the
 * runner, gets the warmed parent (built from a recipe, or pulled), and leaves `forkd serve`
 * running for the job's later steps; the post step (always run, even when the job failed or was
 * cancelled) stops it, reaps every VM, and writes the job summary. Post never throws.
 */
import * as core from '@actions/core';
import { exec } from '@actions/exec';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import {
  accessSync,
  closeSync,
  constants,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { Controller } from '../client/controller.js';
import { packageRoot } from '../engine/package-root.js';
import { pidAlive } from '../engine/process-alive.js';
import { ForkdError, errorMessage } from '../errors.js';
import {
  cacheServiceAvailable,
  imagesEntry,
  restoreEntry,
  saveEntry,
  snapshotsEntry,
  type CacheEntry,
} from './cache.js';
import { resolveEngine } from './engine-release.js';
import { ForkdCli } from './forkd-cli.js';
import { getInputs, type Inputs } from './inputs.js';
import { reapJobProcesses } from './job-processes.js';
import {
  isPost,
  loadActionState,
  loadJobEngine,
  markMainStarted,
  saveActionState,
  saveJobEngine,
  type ActionState,
} from './state.js';

const DAEMON_START_TIMEOUT_MS = 60_000;
const DAEMON_STOP_TIMEOUT_MS = 30_000;
/** The runner follows a cancel's SIGINT with SIGTERM after 7.5 s: the commands get less than that. */
const CANCEL_GRACE_MS = 5_000;
const STRAGGLER_GRACE_MS = 5_000;

/** The engine's CLI for this job; set once the engine is chosen, stopped if the job is cancelled. */
let cli: ForkdCli | undefined;

/** /dev/kvm for the runner user (GitHub's hosted runners need the udev rule); TCG otherwise. */
async function prepareKvm(accel: Inputs['accel']): Promise<void> {
  if (accel === 'tcg' || !existsSync('/dev/kvm')) return;
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
    return;
  } catch {
    // the runner user is not in the kvm group: open the device to everyone, as android-emulator-runner does
  }
  const rule = 'KERNEL=="kvm", GROUP="kvm", MODE="0666", OPTIONS+="static_node=kvm"';
  await exec('sudo', ['sh', '-c', `echo '${rule}' > /etc/udev/rules.d/99-kvm4all.rules`]);
  await exec('sudo', ['udevadm', 'control', '--reload-rules']);
  await exec('sudo', ['udevadm', 'trigger', '--name-match=kvm']);
}

/**
 * The accelerator for the job, from the engine's own probe (`forkd doctor`): `auto` falls back
 * to TCG with a warning, `kvm` fails unless a guest really boots under KVM. Also names the QEMU
 * binary, for the snapshots' cache key.
 */
async function chooseAccel(cli: ForkdCli, wanted: Inputs['accel']): Promise<{ accel: string; qemu: string }> {
  if (wanted === 'tcg') process.env.FORKD_ACCEL = 'tcg'; // no probe boot
  const report = JSON.parse(await cli.run(['doctor', '--json'])) as {
    accel: string | null;
    accelReason: string;
    checks: Array<{ name: string; detail: string }>;
  };
  if (wanted !== 'tcg' && report.accel !== 'kvm') {
    if (wanted === 'kvm') {
      throw new ForkdError(
        'FORKD_ERR_BAD_INPUT',
        `accel: kvm was asked for, but KVM is not usable here: ${report.accelReason}`,
        {
          hint: 'use accel: auto to run under TCG on such runners, or a runner with KVM (GitHub-hosted ubuntu x64)',
        },
      );
    }
    core.warning(
      `KVM is not usable here (${report.accelReason}): guests run under TCG, software emulation, 10-50x slower`,
    );
  }
  const accel = report.accel ?? 'tcg';
  core.exportVariable('FORKD_ACCEL', accel);
  process.env.FORKD_ACCEL = accel;
  return { accel, qemu: report.checks.find((c) => c.name === 'qemu')?.detail ?? '' };
}

/**
 * Which build of the images this is: read from restored images, a new one for images built
 * here. The snapshots' cache key includes it: a snapshot must restore over the very disk images
 * it was taken with, and a rebuilt root filesystem differs byte for byte.
 */
function imagesBuildId(home: string, restored: boolean): string | undefined {
  const file = join(home, 'images', 'forkd-build-id');
  if (restored) return existsSync(file) ? readFileSync(file, 'utf8').trim() : undefined;
  const id = randomUUID();
  writeFileSync(file, `${id}\n`);
  return id;
}

/** Starts `forkd serve` detached from this step (it must outlive it) and waits until it answers. */
async function startDaemon(
  script: string,
  home: string,
): Promise<{ pid: number; log: string; endpoint: string; token: string }> {
  const log = join(home, 'daemon.log');
  const fd = openSync(log, 'a');
  const child = spawn(process.execPath, [script, 'serve'], {
    detached: true,
    stdio: ['ignore', fd, fd],
    env: process.env,
  });
  closeSync(fd);
  child.unref();
  const info = join(home, 'daemon.json');
  const deadline = Date.now() + DAEMON_START_TIMEOUT_MS;
  while (!existsSync(info)) {
    if (child.exitCode !== null || Date.now() > deadline) {
      throw new Error(`forkd serve did not start (see ${log}):\n${readFileSync(log, 'utf8').slice(-2000)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const { endpoint, token_file } = JSON.parse(readFileSync(info, 'utf8')) as { endpoint: string; token_file: string };
  return { pid: child.pid!, log, endpoint, token: readFileSync(token_file, 'utf8').trim() };
}

async function main(): Promise<void> {
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
  const snapshots = inputs.snapshot.kind === 'recipe' ? [inputs.snapshot.recipe, ...inputs.recipes] : inputs.recipes;
  const recipes = [...new Set(snapshots)].filter((r) => r !== 'base');
  /** Cache entries that missed: saved by the post step, once the job has used them. */
  const toSave: CacheEntry[] = [];
  const images = inputs.cache && cacheServiceAvailable() ? imagesEntry(home, engine, recipes) : undefined;
  const imagesRestored = images ? await restoreEntry(images) : false;
  if (images && !imagesRestored) toSave.push(images);
  await run('Building the guest kernel and base image', ['build', 'base']);
  const host = await core.group('Choosing the accelerator', () => chooseAccel(forkd, inputs.accel));
  for (const recipe of recipes) await run(`Building the ${recipe} image`, ['build', recipe]);
  const tags = [...new Set(snapshots.map((recipe) => basename(recipe)))];
  const buildId = images && tags.length ? imagesBuildId(home, imagesRestored) : undefined;
  if (buildId) {
    const entry = snapshotsEntry(home, buildId, tags, host);
    if (!(await restoreEntry(entry))) toSave.push(entry);
  }
  const exists = (tag: string) => existsSync(join(home, 'snapshots', tag));
  for (const recipe of new Set(snapshots)) {
    const tag = basename(recipe);
    if (exists(tag)) core.info(`forkd: snapshot ${tag} is already there`);
    else if (recipe === 'base') await run('Snapshot base', ['snapshot', '--tag', 'base']);
    else await run(`Snapshot ${tag}`, ['snapshot', '--tag', tag, '--recipe', recipe]);
  }
  if (inputs.snapshot.kind === 'hub' && !exists(inputs.tag)) {
    await run(`Pull ${inputs.snapshot.ref}`, ['pull', inputs.snapshot.ref, '--tag', inputs.tag]);
  }
  const daemon = await core.group('Starting forkd serve', () => startDaemon(engine.script, home));
  const state: ActionState = {
    daemonPid: daemon.pid,
    home,
    script: engine.script,
    daemonLog: daemon.log,
    endpoint: daemon.endpoint,
    tag: inputs.tag,
    accel: host.accel,
    toSave,
  };
  saveActionState(state);
  core.setSecret(daemon.token);
  core.exportVariable('FORKD_ENDPOINT', daemon.endpoint);
  core.exportVariable('FORKD_TOKEN', daemon.token);
  const client = new Controller({ endpoint: daemon.endpoint, token: daemon.token });
  try {
    if (inputs.poolSize > 0) await client.setPool(inputs.tag, inputs.poolSize);
    const snapshot = (await client.listSnapshots()).find((s) => s.tag === inputs.tag);
    const accel = snapshot && 'accel' in snapshot ? snapshot.accel : 'unknown';
    core.setOutput('endpoint', daemon.endpoint);
    core.setOutput('snapshot-tag', inputs.tag);
    core.setOutput('accel', accel);
    saveActionState({ ...state, accel });
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

/** SIGTERM (the daemon drains and stops its VMs), SIGKILL if it takes too long; returns its last metrics. */
async function stopDaemon(state: ActionState): Promise<string> {
  const metrics = await new Controller({ endpoint: state.endpoint, token: process.env.FORKD_TOKEN ?? '' })
    .metrics()
    .catch((err: unknown) => {
      core.warning(`forkd: could not read the daemon's metrics: ${errorMessage(err)}`);
      return '';
    });
  if (pidAlive(state.daemonPid)) process.kill(state.daemonPid, 'SIGTERM');
  const deadline = Date.now() + DAEMON_STOP_TIMEOUT_MS;
  while (pidAlive(state.daemonPid) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 200));
  if (pidAlive(state.daemonPid)) {
    core.warning('forkd serve did not stop in time: killing it');
    process.kill(state.daemonPid, 'SIGKILL');
  }
  return metrics;
}

async function writeSummary(state: ActionState, metrics: string): Promise<void> {
  const value = (name: string) => new RegExp(`^${name} (\\S+)$`, 'm').exec(metrics)?.[1] ?? 'n/a';
  const ms = (name: string) => (value(name) === 'n/a' || value(name) === 'NaN' ? 'n/a' : `${value(name)} ms`);
  await core.summary
    .addHeading('forkd', 3)
    .addTable([
      ['accelerator', 'snapshot', 'forks served', 'fork latency p50', 'fork latency p90', 'peak children'].map(
        (data) => ({ data, header: true }),
      ),
      [
        state.accel,
        state.tag,
        value('forkd_forks_total'),
        ms('forkd_fork_latency_p50_ms'),
        ms('forkd_fork_latency_p90_ms'),
        value('forkd_sandboxes_peak'),
      ],
    ])
    .write();
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
