/** The job's `forkd serve`: started detached by the main step, stopped by the post step. */
import * as core from '@actions/core';
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Controller } from '../client/controller.js';
import { ForkdError, errorMessage } from '../errors.js';
import { terminate } from './job-processes.js';
import type { ActionState } from './state.js';

const DAEMON_START_TIMEOUT_MS = 60_000;
const DAEMON_STOP_TIMEOUT_MS = 30_000;

/** Starts `forkd serve` detached from this step (it must outlive it) and waits until it answers. */
export async function startDaemon(
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
      throw new ForkdError(
        'FORKD_ERR_INTERNAL',
        `forkd serve did not start:\n${readFileSync(log, 'utf8').slice(-2000)}`,
        {
          hint: `its log is ${log}`,
        },
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const { endpoint, token_file } = JSON.parse(readFileSync(info, 'utf8')) as { endpoint: string; token_file: string };
  return { pid: child.pid!, log, endpoint, token: readFileSync(token_file, 'utf8').trim() };
}

/** SIGTERM (the daemon drains and stops its VMs), SIGKILL if it takes too long; returns its last metrics. */
export async function stopDaemon(state: ActionState): Promise<string> {
  const client = new Controller({ endpoint: state.endpoint, token: process.env.FORKD_TOKEN ?? '' });
  const metrics = await client
    .metrics()
    .catch((err: unknown) => {
      core.warning(`forkd: could not read the daemon's metrics: ${errorMessage(err)}`);
      return '';
    })
    .finally(() => client.close());
  if ((await terminate([state.daemonPid], DAEMON_STOP_TIMEOUT_MS)).length) {
    core.warning('forkd serve did not stop in time: it was killed');
  }
  return metrics;
}
