/**
 * forkd pull: a pack from a URL, or `owner/name[@version]` through the Hub's registry.json
 * (FORKD_HUB_URL), downloaded (resumably), checked against the registry's sha256, and unpacked.
 * A ref already pulled with the same sha256, whose snapshots are still there, is not fetched again.
 */
import { createHash } from 'node:crypto';
import { writeJsonAtomic } from '../common/atomic-file.js';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { request } from 'undici';
import { ForkdError } from '../errors.js';
import type { StatePaths } from '../common/state-dir.js';
import { download, httpsRequired, unreachable } from './download.js';

export interface PackSource {
  /** What was asked for, as the cache knows it. */
  ref: string;
  url: string;
  sha256?: string;
  size?: number;
  /** Who vouches for sha256 and size (default: the registry), named when they do not match. */
  vouchedBy?: string;
}

interface RegistryVersion {
  url: string;
  sha256: string;
  size_bytes?: number;
}

interface Registry {
  schema_version: number;
  packages: Record<string, { description?: string; versions: Record<string, RegistryVersion> }>;
}

const PART = '[A-Za-z0-9][A-Za-z0-9_.-]{0,63}';
const NAME = new RegExp(`^${PART}/${PART}$`);
const VERSION = new RegExp(`^${PART}$`);

/** The registry URL: FORKD_HUB_URL itself when it names a .json file, else its registry.json. */
export function registryUrl(hub: string | undefined = process.env.FORKD_HUB_URL): string {
  if (!hub) {
    throw new ForkdError('FORKD_ERR_BAD_INPUT', 'no Hub is configured to resolve names', {
      hint: 'set FORKD_HUB_URL to the Hub (the URL that serves registry.json), or pull a pack by its https:// URL',
    });
  }
  return hub.endsWith('.json') ? hub : `${hub.replace(/\/+$/, '')}/registry.json`;
}

/**
 * Refuses a pack over plain http (the daemon's pulls: a token holder must not point the daemon at
 * internal plain-HTTP services), whether the ref is the URL or a registry entry names it. The
 * download checks each redirect the same way (fetchPack's httpsOnly).
 */
export function requireHttps(source: PackSource): void {
  if (new URL(source.url).protocol === 'https:') return;
  throw httpsRequired(source.url, source.url === source.ref ? '' : ` (the registry's URL of ${source.ref})`);
}

/** Where `ref` is: a URL as it is, or `owner/name[@version]` looked up in the registry. */
export async function resolveRef(ref: string): Promise<PackSource> {
  if (/^https?:\/\//.test(ref)) return { ref, url: ref };
  const [name, version = 'latest'] = ref.split('@') as [string, string?];
  if (!NAME.test(name) || !VERSION.test(version)) {
    throw new ForkdError('FORKD_ERR_BAD_INPUT', `${JSON.stringify(ref)} is not a pack reference`, {
      hint: 'use owner/name, owner/name@version, or an https:// URL of a .forkd.tar.zst',
    });
  }
  const index = registryUrl();
  let registry: Registry;
  try {
    const response = await request(index);
    if (response.statusCode !== 200) {
      await response.body.dump();
      throw new Error(`HTTP ${response.statusCode}`);
    }
    registry = (await response.body.json()) as Registry;
  } catch (err) {
    throw unreachable(index, err);
  }
  const entry = registry.packages?.[name]?.versions?.[version];
  if (!entry) {
    const known = Object.keys(registry.packages?.[name]?.versions ?? {});
    throw new ForkdError('FORKD_ERR_NOT_FOUND', `${name}@${version} is not in the registry ${index}`, {
      hint: known.length ? `versions of ${name}: ${known.join(', ')}` : `no package ${name} there; check the name`,
    });
  }
  if (typeof entry.url !== 'string' || !/^[0-9a-f]{64}$/.test(entry.sha256 ?? '')) {
    throw new ForkdError('FORKD_ERR_CORRUPT', `the registry entry of ${name}@${version} has no valid url and sha256`, {
      hint: 'tell the Hub publisher; or pull the pack by URL',
    });
  }
  return {
    ref: `${name}@${version}`,
    url: new URL(entry.url, index).toString(),
    sha256: entry.sha256,
    ...(entry.size_bytes ? { size: entry.size_bytes } : {}),
  };
}

interface PullRecord {
  ref: string;
  sha256?: string;
  tags: string[];
}

/**
 * What pulls have installed: ref -> the pack's sha256 and the tags it became. One file per ref,
 * each replaced atomically, so pulls running at once (in one process or several) never lose each
 * other's records, as a shared read-modify-write file would.
 */
export class PullCache {
  constructor(private readonly paths: StatePaths) {}

  private get dir(): string {
    return join(this.paths.root, 'hub', 'pulled');
  }

  private fileOf(ref: string): string {
    return join(this.dir, `${createHash('sha256').update(ref).digest('hex')}.json`);
  }

  /** The tags of an earlier pull of the same pack, if they are all still installed. */
  lookup(source: PackSource): string[] | undefined {
    let hit: PullRecord;
    try {
      hit = JSON.parse(readFileSync(this.fileOf(source.ref), 'utf8')) as PullRecord;
    } catch {
      return undefined;
    }
    if (hit.ref !== source.ref || !source.sha256 || hit.sha256 !== source.sha256) return undefined;
    return hit.tags.every((tag) => existsSync(join(this.paths.snapshots(), tag))) ? hit.tags : undefined;
  }

  async record(source: PackSource, tags: string[]): Promise<void> {
    const record: PullRecord = { ref: source.ref, ...(source.sha256 ? { sha256: source.sha256 } : {}), tags };
    await mkdir(this.dir, { recursive: true });
    writeJsonAtomic(this.fileOf(source.ref), record, { pretty: true });
  }

  /** Where the download of `source` goes (a stable name, so an interrupted one resumes). */
  packFile(source: PackSource): string {
    const safe = source.ref.replace(/[^A-Za-z0-9_.-]+/g, '_').slice(-100);
    return join(this.paths.root, 'hub', 'downloads', `${safe}.forkd.tar.zst`);
  }
}

/** Downloads `source` into the cache's download dir; returns the pack file (the caller removes it). */
export async function fetchPack(
  cache: PullCache,
  source: PackSource,
  onProgress?: (done: number, total: number) => void,
  httpsOnly = false,
): Promise<string> {
  const file = cache.packFile(source);
  await mkdir(dirname(file), { recursive: true });
  await rm(file, { force: true });
  await download(source.url, file, {
    ...(source.sha256 ? { sha256: source.sha256 } : {}),
    ...(source.size ? { size: source.size } : {}),
    ...(source.vouchedBy ? { vouchedBy: source.vouchedBy } : {}),
    ...(onProgress ? { onProgress } : {}),
    httpsOnly,
  });
  return file;
}
