import { mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';

/** The state dir: `$FORKD_HOME`, else `$XDG_CACHE_HOME/forkd`, else `~/.cache/forkd`. */
export function stateDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.FORKD_HOME) return resolve(env.FORKD_HOME);
  const cache = env.XDG_CACHE_HOME ? resolve(env.XDG_CACHE_HOME) : join(homedir(), '.cache');
  return join(cache, 'forkd');
}

/** Paths inside the state dir, created on first use. */
export class StatePaths {
  constructor(readonly root: string = stateDir()) {}

  private dir(...parts: string[]): string {
    const path = join(this.root, ...parts);
    mkdirSync(path, { recursive: true, mode: 0o700 });
    return path;
  }

  /** Built artifacts, one subdir per kind, named by the hash of their inputs. */
  images(kind: string): string {
    return this.dir('images', kind);
  }

  /** Snapshots, one dir per tag (memory.bin, vmstate, meta.json); staging dirs start with a dot. */
  snapshots(): string {
    return this.dir('snapshots');
  }

  /** Per-VM sockets; removed when the VM stops. */
  run(): string {
    return this.dir('run');
  }

  /** Console logs of VMs; kept only for VMs that failed. */
  logs(): string {
    return this.dir('logs');
  }

  /** Scratch space for builds; each build removes its own. */
  tmp(): string {
    return this.dir('tmp');
  }

  /** The root itself, created if missing. */
  ensureRoot(): string {
    return this.dir();
  }

  file(name: string): string {
    return join(this.dir(), name);
  }
}
