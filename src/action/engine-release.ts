/**
 * Which engine the Action runs: the one bundled beside it, the project's installed forkd-action
 * when its version differs, or (input `version`) a release fetched once per runner through the
 * tool cache. A release is the tarball `npm run release`
 * writes (dist/, native/, recipes/, scripts/, package.json) with a `.sha256` beside it.
 */
import * as core from '@actions/core';
import * as tc from '@actions/tool-cache';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { packageRoot, packageVersion } from '../common/package-root.js';
import { ForkdError } from '../errors.js';
import { sha256File } from '../common/hash.js';
import { RELEASES_URL } from '../hub/official.js';

const TOOL = 'forkd';

export interface Engine {
  version: string;
  /** The package root: native/ and recipes/ the images are built from. */
  root: string;
  /** Its CLI bundle. */
  script: string;
}

export const releaseAssetName = (version: string) => `forkd-${version}-linux-x64.tar.gz`;

const bundled = (): Engine => ({
  version: packageVersion,
  root: packageRoot,
  script: fileURLToPath(new URL('forkd.mjs', import.meta.url)),
});

async function download(url: string, version: string): Promise<string> {
  try {
    return await tc.downloadTool(url);
  } catch (err) {
    const status = err instanceof tc.HTTPError ? ` (HTTP ${err.httpStatusCode})` : '';
    throw new ForkdError('FORKD_ERR_UNREACHABLE', `could not download forkd ${version} from ${url}${status}`, {
      hint: 'check the version input against the published releases, or leave it empty for the bundled engine',
      cause: err,
    });
  }
}

/** Downloads, checks and installs a release into the tool cache; the runner keeps it for later jobs. */
async function install(version: string): Promise<string> {
  const base = process.env.FORKD_RELEASES_URL || RELEASES_URL;
  const url = `${base}/v${version}/${releaseAssetName(version)}`;
  core.info(`forkd: downloading engine ${version} from ${url}`);
  const archive = await download(url, version);
  const expected = readFileSync(await download(`${url}.sha256`, version), 'utf8')
    .trim()
    .split(/\s+/)[0];
  const actual = await sha256File(archive);
  if (actual !== expected) {
    throw new ForkdError('FORKD_ERR_CORRUPT', `forkd ${version}: the download's sha256 is ${actual}, not ${expected}`, {
      hint: 're-run the job; if it persists, the release asset or a proxy is at fault',
    });
  }
  const extracted = await tc.extractTar(archive);
  return tc.cacheDir(extracted, TOOL, version);
}

/**
 * The forkd-action the job's project installed (`npm ci` before the Action), when it is built:
 * its tests' client is that version, and a client only works with an engine of its own version.
 */
function projectEngine(): Engine | undefined {
  const root = join(process.env.GITHUB_WORKSPACE || process.cwd(), 'node_modules', 'forkd-action');
  const manifest = join(root, 'package.json');
  if (!existsSync(manifest)) return undefined;
  const { version } = JSON.parse(readFileSync(manifest, 'utf8')) as { version: string };
  if (!existsSync(join(root, 'lib', 'cli', 'main.js'))) {
    core.warning(`forkd: ${root} (${version}) has no lib/: it is not built, so the Action's own engine runs`);
    return undefined;
  }
  return { version, root, script: join(root, 'bin', 'forkd.js') };
}

/**
 * The engine for the job: the release `version` names; else the project's installed forkd-action
 * when it is another version than the Action's, so that it and its client agree; else the bundled one.
 */
export async function resolveEngine(version: string): Promise<Engine> {
  if (!version) {
    const project = projectEngine();
    if (project && project.version !== packageVersion) {
      core.info(
        `forkd: engine ${project.version} from the project's node_modules/forkd-action (the Action bundles ${packageVersion})`,
      );
      return project;
    }
  }
  if (!version || version === packageVersion) return bundled();
  const found = tc.find(TOOL, version);
  if (found) core.info(`forkd: engine ${version} from the tool cache (${found})`);
  const root = found || (await install(version));
  const script = join(root, 'dist/forkd.mjs');
  const manifest = join(root, 'package.json');
  const actual = existsSync(manifest)
    ? (JSON.parse(readFileSync(manifest, 'utf8')) as { version?: string }).version
    : '';
  if (!existsSync(script) || actual !== version) {
    throw new ForkdError(
      'FORKD_ERR_CORRUPT',
      `the forkd ${version} release in ${root} is not a forkd engine ${version}`,
      {
        hint: `delete ${root} from the tool cache and re-run the job`,
      },
    );
  }
  return { version, root, script };
}
