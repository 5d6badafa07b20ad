import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { promisify } from 'node:util';
import { ForkdError } from '../../errors.js';
import { which } from '../host-tools.js';

const execFileAsync = promisify(execFile);

/**
 * How a recipe's root filesystem is built, most private first:
 * - `root`: this process is root (mmdebstrap --mode=root);
 * - `unshare`: an ordinary user in a user namespace of its own, mapped onto its /etc/subuid range
 *   (mmdebstrap --mode=unshare); the image is written inside the namespace, so ownership is right;
 * - `sudo`: passwordless sudo (GitHub-hosted runners), for hosts that forbid user namespaces.
 */
export type RootfsMode = 'root' | 'unshare' | 'sudo';

const ROOTFS_MODES: readonly RootfsMode[] = ['root', 'unshare', 'sudo'];

/** Ids mmdebstrap maps into the namespace: the whole range a Debian root filesystem uses. */
const SUBID_COUNT = 65536;

async function subidRange(file: string, user: { username: string; uid: number }): Promise<string | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    return `${file} does not exist`;
  }
  const ok = text.split('\n').some((line) => {
    const [owner, , count] = line.trim().split(':');
    return (owner === user.username || owner === String(user.uid)) && Number(count) >= SUBID_COUNT;
  });
  return ok ? undefined : `${file} gives ${user.username} no range of ${SUBID_COUNT} ids`;
}

/** Why user namespaces cannot build a root filesystem here, or undefined when they can. */
async function whyNotUnshare(): Promise<string | undefined> {
  const user = userInfo();
  if (!which('newuidmap') || !which('newgidmap')) return 'newuidmap/newgidmap are missing (package uidmap)';
  const missing = (await Promise.all([subidRange('/etc/subuid', user), subidRange('/etc/subgid', user)])).filter(
    Boolean,
  );
  if (missing.length) return missing.join('; ');
  const mmdebstrap = which('mmdebstrap');
  if (!mmdebstrap) return 'mmdebstrap is missing (package mmdebstrap)';
  try {
    // the namespace the build will use, mapped onto the subuid range as the build maps it
    await execFileAsync(mmdebstrap, ['--unshare-helper', 'true'], { timeout: 10_000 });
    return undefined;
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr?.trim().split('\n').slice(-2).join(' ');
    return `unprivileged user namespaces are not allowed here (${stderr || (err as Error).message})`;
  }
}

async function whyNotSudo(): Promise<string | undefined> {
  const sudo = which('sudo');
  if (!sudo) return 'sudo is not installed';
  try {
    await execFileAsync(sudo, ['-n', 'true'], { timeout: 10_000 });
    return undefined;
  } catch {
    return 'sudo asks for a password';
  }
}

function parseMode(value: string | undefined): RootfsMode | undefined {
  if (value === undefined || value === '' || value === 'auto') return undefined;
  if ((ROOTFS_MODES as readonly string[]).includes(value)) return value as RootfsMode;
  throw new ForkdError(
    'FORKD_ERR_BAD_INPUT',
    `FORKD_ROOTFS_MODE=${value} is not one of auto, ${ROOTFS_MODES.join(', ')}`,
    {
      hint: 'unset it to let forkd choose',
    },
  );
}

/**
 * The way this process can build a root filesystem (FORKD_ROOTFS_MODE forces one). Neither user
 * namespaces nor passwordless sudo: one error that names both fixes, before anything is built.
 */
export async function resolveRootfsMode(env: NodeJS.ProcessEnv = process.env): Promise<RootfsMode> {
  const forced = parseMode(env.FORKD_ROOTFS_MODE);
  const isRoot = process.getuid?.() === 0;
  if (forced) {
    const why =
      forced === 'root'
        ? isRoot
          ? undefined
          : 'this process is not root'
        : forced === 'unshare'
          ? await whyNotUnshare()
          : await whyNotSudo();
    if (why)
      throw new ForkdError('FORKD_ERR_BAD_INPUT', `FORKD_ROOTFS_MODE=${forced} cannot work here: ${why}`, {
        hint: 'unset FORKD_ROOTFS_MODE to let forkd choose',
      });
    return forced;
  }
  if (isRoot) return 'root';
  const noUnshare = await whyNotUnshare();
  if (!noUnshare) return 'unshare';
  const noSudo = await whyNotSudo();
  if (!noSudo) return 'sudo';
  const { username } = userInfo();
  throw new ForkdError(
    'FORKD_ERR_BUILD',
    `cannot build a root filesystem as ${username}: no user namespaces (${noUnshare}) and no passwordless sudo (${noSudo})`,
    {
      hint:
        `either let ${username} use user namespaces: sudo apt-get install uidmap && ` +
        `sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 ${username} ` +
        '(on Ubuntu 24.04 also: sudo sysctl kernel.apparmor_restrict_unprivileged_userns=0); ' +
        `or give ${username} passwordless sudo`,
    },
  );
}
