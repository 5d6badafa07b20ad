import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ForkdError } from '../../errors.js';
import type { OnProgress } from '../progress.js';
import { onProcessExit } from '../reaper.js';
import type { StatePaths } from '../../common/state-dir.js';
import { pidAlive } from '../process-alive.js';

const LOCK_POLL_MS = 500;

export function hashInputs(parts: Array<string | Buffer>): string {
  const hash = createHash('sha256');
  for (const part of parts) {
    const bytes = typeof part === 'string' ? Buffer.from(part, 'utf8') : part;
    hash.update(`${bytes.length}:`).update(bytes);
  }
  return hash.digest('hex').slice(0, 24);
}

export interface BuildOptions {
  /** Only look in the cache; a missing artifact is an error instead of a build. */
  lookupOnly?: boolean;
  /** Told about long work (only when something is actually built). */
  onProgress?: OnProgress;
}

export interface Artifact {
  /** Directory holding the artifact's files; present only once complete. */
  dir: string;
  key: string;
  reused: boolean;
}

export function artifactDir(paths: StatePaths, kind: string, key: string): string {
  return join(paths.images(kind), key);
}

/**
 * Returns `<state>/images/<kind>/<key>/`, building it first when missing. The build writes into a
 * staging dir that is renamed into place only on success, so a half-built artifact is never used.
 */
export async function ensureArtifact(
  paths: StatePaths,
  kind: string,
  key: string,
  build: (staging: string) => Promise<void>,
  options: BuildOptions = {},
): Promise<Artifact> {
  const dir = artifactDir(paths, kind, key);
  if (existsSync(dir)) return { dir, key, reused: true };
  if (options.lookupOnly) {
    throw new ForkdError('FORKD_ERR_NOT_FOUND', `${kind} is not built yet (${dir})`, {
      hint: 'run `forkd build base`',
    });
  }
  const releaseLock = await acquireBuildLock(join(paths.images(kind), `.lock-${key}`), () => existsSync(dir), options);
  if (!releaseLock || existsSync(dir)) {
    releaseLock?.();
    return { dir, key, reused: true }; // another process built it meanwhile
  }
  const staging = join(paths.images(kind), `.staging-${key}-${randomBytes(4).toString('hex')}`);
  const unregister = onProcessExit(() => rmSync(staging, { recursive: true, force: true }));
  try {
    await mkdir(staging, { recursive: true });
    await build(staging);
    await rename(staging, dir);
  } finally {
    await rm(staging, { recursive: true, force: true });
    unregister();
    releaseLock();
  }
  return { dir, key, reused: false };
}

/**
 * One builder per artifact across processes (parallel test workers, CLIs): an exclusive lock file
 * holding the builder's pid. Waits while a live process holds it; takes over a dead holder's lock.
 * Returns the release function, or undefined when the artifact appeared while waiting.
 */
async function acquireBuildLock(
  lock: string,
  built: () => boolean,
  options: BuildOptions,
): Promise<(() => void) | undefined> {
  let announced = false;
  for (;;) {
    try {
      writeFileSync(lock, String(process.pid), { flag: 'wx' });
      const release = () => rmSync(lock, { force: true });
      const unregister = onProcessExit(release);
      return () => {
        unregister();
        release();
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const holder = Number(readFileSync(lock, { encoding: 'utf8', flag: 'r' }).trim() || 0);
    if (holder && !pidAlive(holder)) {
      rmSync(lock, { force: true });
      continue;
    }
    if (!announced) {
      options.onProgress?.({ task: basename(lock), phase: 'waiting', detail: `for the build in process ${holder}` });
      announced = true;
    }
    await sleep(LOCK_POLL_MS);
    if (built()) return undefined;
  }
}
