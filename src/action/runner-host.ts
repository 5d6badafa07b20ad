/** The runner's host for the job: KVM opened to the runner user, and the accelerator the engine will use. */
import * as core from '@actions/core';
import { exec } from '@actions/exec';
import { accessSync, constants, existsSync } from 'node:fs';
import { assertSupportedHost, thisHost, type HostPlatform } from '../engine/host-platform.js';
import { ForkdError } from '../errors.js';
import type { ForkdCli } from './forkd-cli.js';
import type { Inputs } from './inputs.js';

/** Stops the job on a runner forkd cannot run on, before anything is installed there. */
export function refuseUnsupportedRunner(runner: HostPlatform = thisHost()): void {
  assertSupportedHost(runner, 'forkd needs an x86_64 Linux runner (runs-on: ubuntu-latest or ubuntu-24.04)');
}

/** /dev/kvm for the runner user (GitHub's hosted runners need the udev rule); TCG otherwise. */
export async function prepareKvm(accel: Inputs['accel']): Promise<void> {
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
export async function chooseAccel(cli: ForkdCli, wanted: Inputs['accel']): Promise<{ accel: string; qemu: string }> {
  if (wanted === 'tcg') process.env.FORKD_ACCEL = 'tcg'; // no probe boot
  const report = JSON.parse(await cli.run(['doctor', '--json'], { echo: false })) as {
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
  core.info(`forkd: accelerator ${accel} (${report.accelReason})`);
  core.exportVariable('FORKD_ACCEL', accel);
  process.env.FORKD_ACCEL = accel;
  return { accel, qemu: report.checks.find((c) => c.name === 'qemu')?.detail ?? '' };
}
