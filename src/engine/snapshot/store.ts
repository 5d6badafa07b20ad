import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { mkdir, open, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ForkdError } from '../../errors.js';
import { onProcessExit } from '../reaper.js';
import type { StatePaths } from '../../common/state-dir.js';
import { parseMeta, type SnapshotMeta } from './meta.js';
import { validateTag } from './tag.js';
import { pidAlive } from '../process-alive.js';

export const MEMORY_FILE = 'memory.bin';
export const VMSTATE_FILE = 'vmstate';
export const META_FILE = 'meta.json';

export interface SnapshotInfo {
  tag: string;
  dir: string;
  meta: SnapshotMeta;
  memoryFile: string;
  vmstateFile: string;
  /** Bytes the snapshot really occupies on disk (the memory file is sparse). */
  diskBytes: number;
}

/** A snapshot being written: files go into `dir`; commit() makes it visible, abort() removes it. */
export interface SnapshotWriter {
  tag: string;
  dir: string;
  memoryFile: string;
  vmstateFile: string;
  commit(meta: SnapshotMeta): Promise<SnapshotInfo>;
  abort(): Promise<void>;
}

async function diskBytes(dir: string): Promise<number> {
  let total = 0;
  for (const name of readdirSync(dir)) total += (await stat(join(dir, name))).blocks * 512;
  return total;
}

async function fsyncFile(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** `<state>/snapshots/<tag>/`: written in a staging dir and renamed into place, so only complete ones are listed. */
export class SnapshotStore {
  constructor(private readonly paths: StatePaths) {}

  private get root(): string {
    return this.paths.snapshots();
  }

  /**
   * True while a live process writes this tag. Staging dirs are named `.staging-<tag>-<pid>-<rand>`;
   * one whose writer died (SIGKILL, power loss) is removed here instead of blocking the tag forever.
   */
  private writing(tag: string): boolean {
    let busy = false;
    for (const name of readdirSync(this.root)) {
      const m = /^\.(?:staging|trash)-(.+)-(\d+)-[0-9a-f]{8}$/.exec(name);
      if (!m) continue;
      if (pidAlive(Number(m[2]))) busy ||= m[1] === tag;
      else rmSync(join(this.root, name), { recursive: true, force: true });
    }
    return busy;
  }

  async list(): Promise<SnapshotInfo[]> {
    const infos: SnapshotInfo[] = [];
    for (const name of readdirSync(this.root).sort()) {
      if (name.startsWith('.')) continue;
      try {
        infos.push(await this.get(name));
      } catch {
        // unreadable entries are reported by get(tag), not listed as usable
      }
    }
    return infos;
  }

  async get(tag: string): Promise<SnapshotInfo> {
    validateTag(tag);
    const dir = join(this.root, tag);
    if (!existsSync(dir)) {
      if (this.writing(tag)) {
        throw new ForkdError('FORKD_ERR_CONFLICT', `snapshot ${tag} is still being written`, {
          hint: 'wait for `forkd snapshot` to finish',
        });
      }
      const known = readdirSync(this.root).filter((n) => !n.startsWith('.'));
      throw new ForkdError('FORKD_ERR_NOT_FOUND', `no snapshot tagged ${tag}`, {
        hint: known.length ? `known tags: ${known.join(', ')}` : `take one first: forkd snapshot --tag ${tag}`,
      });
    }
    const meta = parseMeta(await readFile(join(dir, META_FILE), 'utf8').catch(() => 'missing'), `${dir}/${META_FILE}`);
    return {
      tag,
      dir,
      meta,
      memoryFile: join(dir, MEMORY_FILE),
      vmstateFile: join(dir, VMSTATE_FILE),
      diskBytes: await diskBytes(dir),
    };
  }

  /** Checks the files a restore needs are whole: a truncated memory or device-state file is refused. */
  async verify(info: SnapshotInfo): Promise<void> {
    const expect: Array<[string, number]> = [
      [info.memoryFile, info.meta.memoryMiB * 1024 * 1024],
      [info.vmstateFile, info.meta.vmstateBytes],
    ];
    for (const [file, size] of expect) {
      const actual = await stat(file).then(
        (s) => s.size,
        () => -1,
      );
      if (actual !== size) {
        throw new ForkdError(
          'FORKD_ERR_CORRUPT',
          `snapshot ${info.tag}: ${file} is ${actual < 0 ? 'missing' : `${actual} bytes, expected ${size}`}`,
          {
            hint: `remove it (forkd rmi ${info.tag}) and take it again`,
          },
        );
      }
    }
  }

  async beginWrite(tag: string): Promise<SnapshotWriter> {
    validateTag(tag);
    if (existsSync(join(this.root, tag))) {
      throw new ForkdError('FORKD_ERR_CONFLICT', `snapshot ${tag} already exists`, {
        hint: `remove it first: forkd rmi ${tag}`,
      });
    }
    if (this.writing(tag)) {
      throw new ForkdError('FORKD_ERR_CONFLICT', `snapshot ${tag} is already being written`, {
        hint: 'wait for the other `forkd snapshot` to finish',
      });
    }
    const dir = join(this.root, `.staging-${tag}-${process.pid}-${randomBytes(4).toString('hex')}`);
    await mkdir(dir, { mode: 0o700 });
    const unregister = onProcessExit(() => rmSync(dir, { recursive: true, force: true }));
    const final = join(this.root, tag);
    const memoryFile = join(dir, MEMORY_FILE);
    const vmstateFile = join(dir, VMSTATE_FILE);
    return {
      tag,
      dir,
      memoryFile,
      vmstateFile,
      commit: async (meta) => {
        await writeFile(join(dir, META_FILE), `${JSON.stringify(meta, null, 2)}\n`);
        await Promise.all([memoryFile, vmstateFile, join(dir, META_FILE)].map(fsyncFile));
        if (existsSync(final))
          throw new ForkdError('FORKD_ERR_CONFLICT', `snapshot ${tag} appeared while this one was written`);
        await rename(dir, final);
        unregister();
        return this.get(tag);
      },
      abort: async () => {
        await rm(dir, { recursive: true, force: true });
        unregister();
      },
    };
  }

  async remove(tag: string): Promise<void> {
    const info = await this.get(tag).catch((err: ForkdError) => {
      // A snapshot with unreadable metadata can still be removed.
      if (err.code === 'FORKD_ERR_CORRUPT') return undefined;
      throw err;
    });
    const dir = info?.dir ?? join(this.root, validateTag(tag));
    // Rename first so a half-removed snapshot is never seen as usable.
    const trash = join(this.root, `.trash-${tag}-${process.pid}-${randomBytes(4).toString('hex')}`);
    await rename(dir, trash);
    await rm(trash, { recursive: true, force: true });
  }
}
