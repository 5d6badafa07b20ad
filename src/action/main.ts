/**
 * The GitHub Action: one bundle (dist/action.mjs) for both phases. The main step prepares the
 * runner, gets the warmed parent (built from a recipe, or pulled), and leaves `forkd serve`
 * running for the job's later steps; the post step (always run, even when the job failed or was
 * cancelled) stops it, reaps every VM, and writes the job summary. Post never throws.
 */
import * as core from '@actions/core';
import { exec } from '@actions/exec';
import { spawn } from 'node:child_process';
import { accessSync, closeSync, constants, existsSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Controller } from '../client/controller.js';
import { packageRoot } from '../engine/package-root.js';
import { errorMessage } from '../errors.js';
import { imagesCacheKey, restoreImages, saveImages } from './cache.js';
import { getInputs, type Inputs } from './inputs.js';
import { isPost, loadActionState, markMainStarted, saveActionState, type ActionState } from './state.js';

/** The CLI bundled beside this file. */
const FORKD = fileURLToPath(new URL('forkd.mjs', import.meta.url));
const DAEMON_START_TIMEOUT_MS = 60_000;
const DAEMON_STOP_TIMEOUT_MS = 30_000;

/** Runs the bundled CLI, its output in the log; a failure carries its error, hint and console tail. */
async function forkd(args: string[]): Promise<void> {
  let stderr = '';
  const code = await exec(process.execPath, [FORKD, ...args], {
    ignoreReturnCode: true,
    listeners: { stderr: (data: Buffer) => (stderr += data.toString()) },
  });
  if (code !== 0) {
    const tail = stderr
      .trim()
      .split('\n')
      .filter((line) => !/^\S+: .*\(\d+s\)$/.test(line))
      .slice(-30);
    throw new Error(`forkd ${args.join(' ')} failed (exit ${code}):\n${tail.join('\n')}`);
  }
}

/** /dev/kvm for the runner user (GitHub's hosted runners need the udev rule); TCG otherwise. */
async function prepareKvm(accel: Inputs['accel']): Promise<void> {
  if (accel === 'tcg') return;
  if (!existsSync('/dev/kvm')) {
    if (accel === 'kvm') throw new Error('accel: kvm was asked for, but this runner has no /dev/kvm');
    core.warning('no /dev/kvm on this runner: guests run under TCG (software emulation), 10-50x slower than KVM');
    return;
  }
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

/** Starts `forkd serve` detached from this step (it must outlive it) and waits until it answers. */
async function startDaemon(home: string): Promise<{ pid: number; log: string; endpoint: string; token: string }> {
  const log = join(home, 'daemon.log');
  const fd = openSync(log, 'a');
  const child = spawn(process.execPath, [FORKD, 'serve'], {
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
  if (inputs.accel !== 'auto') {
    core.exportVariable('FORKD_ACCEL', inputs.accel);
    process.env.FORKD_ACCEL = inputs.accel;
  }
  await core.group('Preparing the runner', async () => {
    await prepareKvm(inputs.accel);
    await exec('bash', [join(packageRoot, 'scripts/host-packages.sh')]);
  });
  const snapshots = inputs.snapshot.kind === 'recipe' ? [inputs.snapshot.recipe, ...inputs.recipes] : inputs.recipes;
  const recipes = [...new Set(snapshots)].filter((r) => r !== 'base');
  const cacheKey = inputs.cache ? imagesCacheKey(recipes) : '';
  const restored = inputs.cache && (await restoreImages(home, cacheKey));
  await core.group('Building the guest kernel and base image', () => forkd(['build', 'base']));
  for (const recipe of recipes) await core.group(`Building the ${recipe} image`, () => forkd(['build', recipe]));
  const exists = (tag: string) => existsSync(join(home, 'snapshots', tag));
  for (const recipe of new Set(snapshots)) {
    if (exists(recipe)) {
      core.info(`forkd: snapshot ${recipe} is already there`);
      continue;
    }
    if (recipe === 'base') {
      await core.group('Snapshot base', () => forkd(['snapshot', '--tag', 'base']));
      continue;
    }
    await core.group(`Snapshot ${recipe}`, () => forkd(['snapshot', '--tag', recipe, '--recipe', recipe]));
  }
  if (inputs.snapshot.kind === 'hub' && !exists(inputs.tag)) {
    const ref = inputs.snapshot.ref;
    await core.group(`Pull ${ref}`, () => forkd(['pull', ref, '--tag', inputs.tag]));
  }
  const daemon = await core.group('Starting forkd serve', () => startDaemon(home));
  const state: ActionState = {
    daemonPid: daemon.pid,
    home,
    daemonLog: daemon.log,
    endpoint: daemon.endpoint,
    tag: inputs.tag,
    accel: process.env.FORKD_ACCEL ?? 'auto',
    // saved in the post step, once the images are known good (a hit needs no save)
    cacheKey: restored ? '' : cacheKey,
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

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Stops the daemon (it kills its VMs), then anything of this job's that is still running. */
async function post(): Promise<void> {
  const state = loadActionState();
  if (!state) {
    core.info('forkd: the main step started nothing, so there is nothing to stop');
    return;
  }
  const metrics = await new Controller({ endpoint: state.endpoint, token: process.env.FORKD_TOKEN ?? '' })
    .metrics()
    .catch((err: unknown) => {
      core.warning(`forkd: could not read the daemon's metrics: ${errorMessage(err)}`);
      return '';
    });
  if (alive(state.daemonPid)) process.kill(state.daemonPid, 'SIGTERM');
  const deadline = Date.now() + DAEMON_STOP_TIMEOUT_MS;
  while (alive(state.daemonPid) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 200));
  if (alive(state.daemonPid)) {
    core.warning('forkd serve did not stop in time: killing it');
    process.kill(state.daemonPid, 'SIGKILL');
  }
  await exec('pkill', ['-KILL', '-f', `qemu-system.*${state.home}`], { ignoreReturnCode: true, silent: true });
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
  if (state.cacheKey) await saveImages(state.home, state.cacheKey);
  await core.group('forkd serve log (tail)', async () => {
    if (existsSync(state.daemonLog)) core.info(readFileSync(state.daemonLog, 'utf8').slice(-4000));
  });
}

if (isPost()) {
  await post().catch((err: unknown) => core.warning(`forkd teardown: ${errorMessage(err)}`));
} else {
  await main().catch((err: unknown) => core.setFailed(errorMessage(err)));
}
