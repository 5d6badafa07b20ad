/**
 * forkd pack: a snapshot (with its chain and the images it runs on) as one `.forkd.tar.zst` that
 * `zstd -d | tar x` can read. The manifest comes first; memory and disk images are sparse entries;
 * the tar is compressed in independent frames, so memory stays bounded whatever the sizes.
 */
import { createHash } from 'node:crypto';
import { createWriteStream, rmSync } from 'node:fs';
import { open, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { pack as tarPack, type Header } from 'tar-stream';
import { ForkdError } from '../errors.js';
import { onProcessExit } from '../engine/reaper.js';
import { ancestorsOf } from '../engine/snapshot/chain.js';
import type { SnapshotInfo, SnapshotStore } from '../engine/snapshot/store.js';
import { packageVersion } from '../common/package-root.js';
import {
  IMAGE_FILES,
  MANIFEST_NAME,
  PACK_FORMAT,
  type PackFile,
  type PackLink,
  type PackManifest,
} from './manifest.js';
import { encodeSparseMap, scanFile, sparsePax, type Extent } from './sparse.js';
import { compressFrames } from './zstd-frames.js';

const READ_BYTES = 1024 * 1024;

/** Reports bytes of file data written into the pack so far, out of the total. */
export type PackProgress = (done: number, total: number) => void;

interface Source {
  file: PackFile;
  from: string;
  extents: Extent[];
}

async function source(from: string, path: string): Promise<Source> {
  const { size, sha256, extents } = await scanFile(from);
  const stored = extents.reduce((n, e) => n + e.length, 0);
  const sparse = stored < size;
  // GNU tar sizes the file by its last extent: a file that ends in a hole ends with an empty one
  const last = extents.at(-1);
  if (sparse && (!last || last.offset + last.length < size)) extents.push({ offset: size, length: 0 });
  return { file: { path, size, sha256, sparse }, from, extents: sparse ? extents : [{ offset: 0, length: size }] };
}

async function* extentBytes(path: string, extents: Extent[], onBytes: (n: number) => void): AsyncGenerator<Buffer> {
  const file = await open(path, 'r');
  try {
    for (const { offset, length } of extents) {
      for (let at = 0; at < length; at += READ_BYTES) {
        const buf = Buffer.alloc(Math.min(READ_BYTES, length - at));
        const { bytesRead } = await file.read(buf, 0, buf.length, offset + at);
        if (bytesRead !== buf.length) throw new ForkdError('FORKD_ERR_CORRUPT', `${path} changed while it was packed`);
        onBytes(bytesRead);
        yield buf;
      }
    }
  } finally {
    await file.close();
  }
}

/** The chain root first, with the files each link needs (a link's memory.bin is a cache and is left out). */
async function snapshotSources(
  store: SnapshotStore,
  head: SnapshotInfo,
): Promise<{ links: PackLink[]; sources: Source[] }> {
  const chain = [...(await ancestorsOf(store, head)).reverse(), head];
  const links: PackLink[] = [];
  const sources: Source[] = [];
  for (const info of chain) {
    const names = ['meta.json', 'vmstate', info.meta.parent ? 'memory.diff' : 'memory.bin'];
    const linkSources = await Promise.all(names.map((name) => source(join(info.dir, name), `${info.tag}/${name}`)));
    links.push({ tag: info.tag, parent: info.meta.parent, files: linkSources.map((s) => s.file) });
    sources.push(...linkSources);
  }
  return { links, sources };
}

/** Writes `tag` (and its chain and images) to `out`, atomically: `out` appears only when complete. */
export async function writePack(
  store: SnapshotStore,
  tag: string,
  out: string,
  onProgress: PackProgress = () => {},
): Promise<{ manifest: PackManifest; bytes: number; sha256: string }> {
  const head = await store.get(tag);
  const { links, sources } = await snapshotSources(store, head);
  const { vm, image } = head.meta;
  // each image under the name of its role, whatever it is called here (FORKD_KERNEL may be any file)
  const roles: Array<[path: string | undefined, name: (typeof IMAGE_FILES)[number]]> = [
    [vm.kernel, 'bzImage'],
    [vm.initrd, 'initramfs.cpio'],
    [vm.rootfs, 'rootfs.ext4'],
  ];
  const images = await Promise.all(
    roles
      .filter((role): role is [string, (typeof IMAGE_FILES)[number]] => !!role[0])
      .map(async ([path, name]) => {
        const scanned = await source(path, '');
        scanned.file.path = `images/${scanned.file.sha256}/${name}`;
        return scanned;
      }),
  );
  const sha = (path: string | undefined) => images.find((s) => s.from === path)?.file.sha256;
  const manifest: PackManifest = {
    format: PACK_FORMAT,
    tag,
    created: new Date().toISOString(),
    engine: `forkd-action ${packageVersion}`,
    compat: {
      arch: 'x86_64',
      accel: head.meta.accel,
      qemuVersion: head.meta.qemuVersion,
      machine: head.meta.machine,
      ...(head.meta.cpu ? { cpu: head.meta.cpu } : {}),
      memoryMiB: head.meta.memoryMiB,
      image: image.name,
      kernel: { hash: image.kernelHash, sha256: sha(vm.kernel)! },
      initrd: { hash: image.initrdHash, sha256: sha(vm.initrd)! },
      rootfs: vm.rootfs && image.rootfsHash ? { hash: image.rootfsHash, sha256: sha(vm.rootfs)! } : null,
    },
    chain: links,
    images: images.map((s) => s.file),
  };

  const all = [...sources, ...images];
  const total = all.reduce((n, s) => n + s.extents.reduce((m, e) => m + e.length, 0), 0);
  let done = 0;
  const partial = join(dirname(out), `.${basename(out)}.partial-${process.pid}`);
  const unregister = onProcessExit(() => rmSync(partial, { force: true }));
  const pack = tarPack();
  const packHash = createHash('sha256'); // of the pack itself, as written (what a registry lists)
  const writing = pipeline(
    pack,
    async function* (tarBytes: AsyncIterable<unknown>) {
      for await (const frame of compressFrames(tarBytes as AsyncIterable<Buffer>)) {
        packHash.update(frame);
        yield frame;
      }
    },
    createWriteStream(partial),
  );
  try {
    const json = Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`);
    await pipeline(Readable.from([json]), pack.entry({ name: MANIFEST_NAME, size: json.length, mode: 0o644 }));
    for (const { file, from, extents } of all) {
      const map = file.sparse ? encodeSparseMap(extents) : Buffer.alloc(0);
      const stored = map.length + extents.reduce((n, e) => n + e.length, 0);
      const header: Partial<Header> & Pick<Header, 'name'> = file.sparse
        ? {
            name: `${dirname(file.path)}/GNUSparseFile.0/${basename(file.path)}`,
            size: stored,
            mode: 0o644,
            pax: sparsePax(file.path, file.size),
          }
        : { name: file.path, size: stored, mode: 0o644 };
      const data = extentBytes(from, extents, (n) => onProgress((done += n), total));
      await pipeline(
        Readable.from(
          (async function* () {
            if (map.length) yield map;
            yield* data;
          })(),
        ),
        pack.entry(header),
      );
    }
    pack.finalize();
    await writing;
    await rename(partial, out);
    return { manifest, bytes: (await stat(out)).size, sha256: packHash.digest('hex') };
  } catch (err) {
    pack.destroy();
    await writing.catch(() => {});
    await rm(partial, { force: true });
    throw err;
  } finally {
    unregister();
  }
}
