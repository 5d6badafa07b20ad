/**
 * Official packs: the images and snapshots of `base` and of every recipe in recipes/, made by
 * scripts/release.mjs for each release and pinned by sha256 in the package's official-packs.json.
 * A pinned pack is pulled instead of compiling a kernel or bootstrapping a root filesystem; nothing
 * unpinned is trusted.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ForkdError } from '../errors.js';
import { packageRoot, packageVersion } from '../common/package-root.js';
import type { PackSource } from './pull.js';

export const PINS_FILE = 'official-packs.json';
/** Where releases are: the engine tarball the Action's `version` input fetches, and the official packs. */
export const RELEASES_URL = 'https://github.com/deeplethe/forkd-action/releases/download';

export interface OfficialPin {
  /** The pack's file name, next to registry.json on the Hub (the release's assets). */
  file: string;
  sha256: string;
  size: number;
}

/** official-packs.json: the packs of one engine version. */
export interface OfficialPins {
  version: string;
  packs: Record<string, OfficialPin>;
}

/** The registry name of an official pack (`forkd/postgres`). */
export const officialName = (name: string) => `forkd/${name}`;
/** The tag an official pack's snapshot is installed under. */
export const officialTag = (name: string) => `official-${name}`;
/** The pack file of `name` in a release. */
export const officialFile = (name: string, version: string) => `forkd-${name}-${version}.forkd.tar.zst`;

type BuildMode = 'auto' | 'local';

function buildMode(env: NodeJS.ProcessEnv): BuildMode {
  const mode = env.FORKD_BUILD ?? 'auto';
  if (mode !== 'auto' && mode !== 'local') {
    throw new ForkdError('FORKD_ERR_BAD_INPUT', `FORKD_BUILD=${mode} is not one of auto, local`, {
      hint: 'unset it to pull pinned official packs where they exist, or set FORKD_BUILD=local to build everything here',
    });
  }
  return mode;
}

export function readPins(root: string = packageRoot): OfficialPins | undefined {
  const file = join(root, PINS_FILE);
  if (!existsSync(file)) return undefined;
  try {
    const pins = JSON.parse(readFileSync(file, 'utf8')) as OfficialPins;
    if (typeof pins.version !== 'string' || typeof pins.packs !== 'object' || pins.packs === null)
      throw new Error('no version or packs');
    return pins;
  } catch (err) {
    throw new ForkdError(
      'FORKD_ERR_CORRUPT',
      `${file} is not a list of official pack pins: ${(err as Error).message}`,
      {
        hint: 'reinstall forkd-action',
      },
    );
  }
}

/** The Hub that serves the release's packs: FORKD_HUB_URL (or the dir of its registry.json), else the release (FORKD_RELEASES_URL mirrors it). */
function hubBase(env: NodeJS.ProcessEnv, version: string): string {
  const hub = env.FORKD_HUB_URL;
  if (!hub) return `${env.FORKD_RELEASES_URL || RELEASES_URL}/v${version}/`;
  return hub.endsWith('.json') ? new URL('.', hub).toString() : `${hub.replace(/\/+$/, '')}/`;
}

export type OfficialSource = { source: PackSource; pin: OfficialPin } | { reason: string };

/**
 * Where the official pack of `name` (base or a recipe) comes from, pinned, or why there is none:
 * FORKD_BUILD=local, no pins for this engine's exact version, or no pin for the name.
 */
export function officialSource(
  name: string,
  env: NodeJS.ProcessEnv = process.env,
  pins: OfficialPins | undefined = readPins(),
): OfficialSource {
  if (buildMode(env) === 'local') return { reason: 'FORKD_BUILD=local' };
  if (!pins || pins.version !== packageVersion)
    return { reason: `no official packs are pinned for forkd-action ${packageVersion}` };
  const pin = pins.packs[name];
  if (!pin) return { reason: `no official pack of ${name} is pinned for forkd-action ${packageVersion}` };
  if (
    !/^[0-9a-f]{64}$/.test(pin.sha256 ?? '') ||
    !Number.isSafeInteger(pin.size) ||
    pin.file !== officialFile(name, pins.version)
  )
    throw new ForkdError('FORKD_ERR_CORRUPT', `the pin of the official pack ${name} is malformed`, {
      hint: 'reinstall forkd-action',
    });
  return {
    pin,
    source: {
      ref: `${officialName(name)}@${pins.version}`,
      url: new URL(pin.file, hubBase(env, pins.version)).toString(),
      sha256: pin.sha256,
      size: pin.size,
      vouchedBy: `the pin of forkd-action ${pins.version} (${PINS_FILE})`,
    },
  };
}
