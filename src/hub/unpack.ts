/**
 * forkd unpack: a pack into the state dir. Everything is written to a staging dir first and every
 * sha256 checked; only then do the images and snapshots become visible (renames), so a bad,
 * hostile, truncated or incompatible pack, or a full disk, changes nothing.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, rmSync } from 'node:fs';
import { mkdir, mkdtemp, open, readFile, rename, rm, rmdir, stat, writeFile, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { extract as tarExtract, type Header } from 'tar-stream';
import { ForkdError, errorMessage } from '../errors.js';
import { onProcessExit } from '../engine/reaper.js';
import { incompatibilities, parseMeta, type HostFacts, type SnapshotMeta } from '../engine/snapshot/meta.js';
import { validateTag } from '../engine/snapshot/tag.js';
import type { StatePaths } from '../common/state-dir.js';
import { MANIFEST_NAME, MAX_MANIFEST_BYTES, parseManifest, type PackFile, type PackManifest } from './manifest.js';
import type { PackProgress } from './pack.js';
import { parseSparseMap, type Extent } from './sparse.js';
import { decompressFrames } from './zstd-frames.js';

export interface UnpackOptions {
  /** Install the snapshot under this tag (a pack of one snapshot only). */
  tag?: string;
  /** Replace snapshots that exist under the pack's tags. */
  force?: boolean;
  /** The head tag the pack must have (an official pack is pinned by its name): another is refused. */
  head?: string;
  onProgress?: PackProgress;
}

export interface Unpacked {
  manifest: PackManifest;
  /** The snapshots installed, root first (the last is the pack's head). */
  tags: string[];
  /** Set when the pack's snapshot did not fit this host and was taken again here from its images. */
  retaken?: { reason: string; ms: number };
}

const ZEROS = Buffer.alloc(1024 * 1024);

function corrupt(message: string): ForkdError {
  return new ForkdError('FORKD_ERR_CORRUPT', message, {
    hint: 'the pack is damaged or not a forkd pack; download or pack it again',
  });
}

type Entry = AsyncIterable<Buffer> & { header: Header };

/** One file entry written into `target`: the logical bytes hashed, holes left as holes. */
async function writeEntry(entry: Entry, target: string, file: PackFile): Promise<void> {
  const header = entry.header;
  const pax = (header.pax ?? {}) as Record<string, string>;
  const sparse = pax['GNU.sparse.major'] !== undefined;
  if (sparse && (pax['GNU.sparse.major'] !== '1' || pax['GNU.sparse.minor'] !== '0'))
    throw corrupt(`${file.path} uses a sparse format other than GNU 1.0`);
  if (sparse !== file.sparse) throw corrupt(`${file.path} is ${sparse ? '' : 'not '}sparse, unlike its manifest entry`);
  const size = sparse ? Number(pax['GNU.sparse.realsize']) : header.size;
  if (size !== file.size) throw corrupt(`${file.path} holds ${size} bytes; the manifest says ${file.size}`);
  await mkdir(dirname(target), { recursive: true });
  const out = await open(target, 'wx', 0o644);
  const hash = createHash('sha256');
  try {
    let extents: Extent[] | undefined = sparse ? undefined : [{ offset: 0, length: size }];
    let head = Buffer.alloc(0);
    let skip = 0; // map padding still to come
    let index = 0;
    let within = 0;
    let hashed = 0; // logical bytes hashed so far (holes included)
    const hashZerosTo = (offset: number) => {
      for (; hashed < offset; hashed += Math.min(ZEROS.length, offset - hashed)) {
        hash.update(ZEROS.subarray(0, Math.min(ZEROS.length, offset - hashed)));
      }
    };
    for await (const chunk of entry) {
      let data = chunk;
      if (!extents) {
        head = Buffer.concat([head, data]);
        const map = parseSparseMap(head, size, header.size);
        if (!map) continue;
        extents = map.extents;
        data = head.subarray(Math.min(map.mapBytes, head.length));
        skip = Math.max(0, map.mapBytes - head.length);
      }
      if (skip) {
        const dropped = Math.min(skip, data.length);
        [skip, data] = [skip - dropped, data.subarray(dropped)];
      }
      while (data.length) {
        const extent = extents[index];
        if (!extent) throw corrupt(`${file.path} has more data than its map describes`);
        const take = Math.min(extent.length - within, data.length);
        hashZerosTo(extent.offset + within);
        hash.update(data.subarray(0, take));
        hashed += take;
        await out.write(data, 0, take, extent.offset + within);
        [within, data] = [within + take, data.subarray(take)];
        if (within === extent.length) [index, within] = [index + 1, 0];
      }
    }
    if (!extents) throw corrupt(`${file.path} ends inside its sparse map`);
    hashZerosTo(size);
    await out.truncate(size);
  } finally {
    await out.close();
  }
  if (hash.digest('hex') !== file.sha256) throw corrupt(`${file.path} does not match its sha256 in the manifest`);
}

/** The part of an extraction error that says what is wrong with the pack (a tar parse error is one). */
function packError(err: unknown): unknown {
  if (err instanceof ForkdError || (err as NodeJS.ErrnoException).syscall) return err; // ours, or the disk's
  return corrupt(`it is not a valid tar stream: ${errorMessage(err)}`);
}

/**
 * Reads the pack into a staging dir, checking each entry against the manifest as it comes. The
 * manifest is read first and handed to `accept`, which refuses it (tags that exist, a bad --tag,
 * another host) or returns the staging dir for the files, so input that is not a pack, or a pack
 * refused by its manifest, creates nothing.
 */
async function extractVerified(
  file: string,
  onProgress: PackProgress,
  accept: (manifest: PackManifest) => Promise<string>,
): Promise<{ manifest: PackManifest; staging: string }> {
  const handle = await openPack(file);
  const total = (await handle.stat()).size;
  let read = 0;
  let manifest: PackManifest | undefined;
  let staging = '';
  const input = handle.createReadStream({ highWaterMark: 1024 * 1024, autoClose: false });
  input.on('data', (chunk) => {
    read += chunk.length;
    if (staging) onProgress(read, total); // from the manifest's acceptance on: a refusal reports no progress
  });
  const extract = tarExtract();
  const feeding = pipeline(input, decompressFrames, extract);
  const expected = new Map<string, PackFile>();
  try {
    for await (const raw of extract) {
      const entry = raw as unknown as Entry;
      const { header } = entry;
      if (header.type !== 'file')
        throw corrupt(`the pack holds a ${header.type} entry (${header.name}); only files are allowed`);
      if (!manifest) {
        if (header.name !== MANIFEST_NAME) throw corrupt(`its first entry is ${header.name}, not ${MANIFEST_NAME}`);
        if (header.size > MAX_MANIFEST_BYTES)
          throw corrupt(`its manifest is ${header.size} bytes (at most ${MAX_MANIFEST_BYTES})`);
        const chunks: Buffer[] = [];
        for await (const chunk of entry) chunks.push(chunk);
        manifest = parseManifest(Buffer.concat(chunks).toString('utf8'));
        staging = await accept(manifest);
        for (const f of [...manifest.chain.flatMap((l) => l.files), ...manifest.images]) expected.set(f.path, f);
        continue;
      }
      const pax = (header.pax ?? {}) as Record<string, string>;
      const path = pax['GNU.sparse.name'] ?? header.name;
      const listed = expected.get(path);
      if (!listed)
        throw corrupt(`the pack holds ${JSON.stringify(path)}, which its manifest does not list (or lists once)`);
      expected.delete(path);
      await writeEntry(entry, join(staging, path), listed);
    }
    await feeding;
    if (!manifest) throw corrupt('it is empty');
    if (expected.size) throw corrupt(`it lacks ${[...expected.keys()].join(', ')}`);
    return { manifest, staging };
  } catch (caught) {
    input.destroy();
    await feeding.catch(() => {});
    const err = packError(caught);
    if (!manifest && err instanceof ForkdError && err.code === 'FORKD_ERR_CORRUPT') {
      throw new ForkdError('FORKD_ERR_CORRUPT', `${file} is not a forkd pack (${err.message})`, {
        hint: 'a pack is the .forkd.tar.zst that forkd pack writes; download or pack it again',
        cause: err,
      });
    }
    throw err;
  } finally {
    await handle.close();
  }
}

/** The pack opened for reading: a missing path, anything but a regular file, or an unreadable one is refused. */
async function openPack(file: string): Promise<FileHandle> {
  const unreadable = (err: NodeJS.ErrnoException): never => {
    if (err.code === 'ENOENT' || err.code === 'ENOTDIR') {
      throw new ForkdError('FORKD_ERR_NOT_FOUND', `no pack at ${file}`, {
        hint: 'check the path; forkd pack --tag TAG writes one',
      });
    }
    throw new ForkdError('FORKD_ERR_BAD_INPUT', `cannot read the pack ${file} (${err.code})`, {
      hint: 'check its permissions: the user that runs forkd must be able to read it',
      cause: err,
    });
  };
  const stats = await stat(file).catch(unreadable);
  if (!stats.isFile()) {
    throw new ForkdError(
      'FORKD_ERR_BAD_INPUT',
      `${file} is ${stats.isDirectory() ? 'a directory' : 'not a regular file'}, not a pack`,
      { hint: 'give the path of a .forkd.tar.zst that forkd pack wrote (a URL goes to forkd pull)' },
    );
  }
  return open(file, 'r').catch(unreadable);
}

/**
 * This host's facts that a pack's snapshots must match, found without building anything: from
 * what needs no guest (FORKD_ACCEL, no usable KVM) or an earlier probe of the pack's kernel, else
 * by a probe boot of the pack's own kernel and initramfs once they are staged and verified. And
 * how to take a snapshot again here when the pack's does not fit.
 */
export interface PackHost {
  /** The facts, when they need no boot of the kernel with this sha256 (undefined: they do). */
  known(kernelSha256: string): Promise<HostFacts | undefined>;
  /** The facts, from a probe boot of these images. */
  probe(guest: { kernel: string; initrd: string }): Promise<HostFacts>;
  /** Takes snapshot `tag` here as `meta` records it (its installed images, warm-up, ready check, ports, memory). */
  retake(tag: string, meta: SnapshotMeta): Promise<void>;
}

/** The guests forkd runs; a pack records the architecture of its images. */
const ARCH = 'x86_64';

/**
 * Why this host cannot restore the pack's snapshots as they are (undefined: it can). A single
 * snapshot is then taken again here from the pack's images; a chain cannot be (its diff links
 * record BRANCH points inside running tests, not a recipe), so it is refused.
 */
function misfit(manifest: PackManifest, host: HostFacts): string | undefined {
  const c = manifest.compat;
  const diffs = incompatibilities(
    {
      accel: c.accel as HostFacts['accel'],
      qemuVersion: c.qemuVersion,
      machine: c.machine,
      ...(c.cpu ? { cpu: c.cpu } : {}),
    },
    host,
  );
  if (!diffs.length) return undefined;
  const reason = `the pack's snapshot was taken with ${diffs.join(', ')}`;
  if (manifest.chain.length > 1) {
    throw new ForkdError(
      'FORKD_ERR_INCOMPATIBLE',
      `the pack ${manifest.tag} is a chain of ${manifest.chain.length} snapshots and ${reason}: its diff links cannot be taken again here`,
      {
        hint: 'make the chain again on this host, or unpack it on a host with the QEMU and accelerator it was taken with',
      },
    );
  }
  return reason;
}

/**
 * Unpacks a pack into the state dir: images under images/hub/<sha256>/, snapshots under their
 * tags (or `options.tag`). Refuses tags that exist unless `force`; a replaced snapshot is
 * removed only after the new one is in place. Input that is not a pack is refused before
 * anything is written, and before `host` is asked.
 */
export async function unpack(
  file: string,
  paths: StatePaths,
  host: PackHost,
  options: UnpackOptions = {},
): Promise<Unpacked> {
  let staging: string | undefined;
  const unregister = onProcessExit(() => staging && rmSync(staging, { recursive: true, force: true }));
  const moved: Array<{ from: string; to: string }> = [];
  const replaced: string[] = [];
  const made: string[] = [];
  let retaken: Unpacked['retaken'];
  try {
    const tagOf = (tag: string) => (options.tag !== undefined ? validateTag(options.tag) : tag);
    let checked = false; // against this host, before extraction
    let retake: string | undefined; // why the pack's snapshot is taken again here
    const accept = async (manifest: PackManifest): Promise<string> => {
      if (options.tag !== undefined && manifest.chain.length > 1) {
        throw new ForkdError(
          'FORKD_ERR_BAD_INPUT',
          `--tag renames a single snapshot; this pack holds a chain of ${manifest.chain.length}`,
          { hint: 'unpack it under its own tags' },
        );
      }
      for (const link of manifest.chain) {
        if (existsSync(join(paths.snapshots(), tagOf(link.tag))) && !options.force) {
          throw new ForkdError('FORKD_ERR_CONFLICT', `snapshot ${tagOf(link.tag)} already exists`, {
            hint: `pass --force to replace it, --tag NEW to unpack under another tag, or forkd rmi ${tagOf(link.tag)}`,
          });
        }
      }
      if (options.head !== undefined && (manifest.tag !== options.head || manifest.compat.image !== options.head)) {
        throw new ForkdError(
          'FORKD_ERR_CORRUPT',
          `the pack pinned as ${options.head} holds ${manifest.tag} (made from ${manifest.compat.image})`,
          { hint: 'the Hub serves another pack under the pinned name; nothing was installed. Tell the publisher' },
        );
      }
      const arch = manifest.compat.arch ?? ARCH;
      if (arch !== ARCH) {
        throw new ForkdError(
          'FORKD_ERR_INCOMPATIBLE',
          `the pack ${manifest.tag} holds ${arch} guests; forkd runs ${ARCH}`,
          {
            hint: 'pull the pack made for x86_64, or take the snapshot here from its recipe',
          },
        );
      }
      const known = await host.known(manifest.compat.kernel.sha256);
      if (known) retake = misfit(manifest, known);
      checked = known !== undefined;
      staging = await mkdtemp(join(paths.tmp(), 'unpack-'));
      return staging;
    };
    const { manifest, staging: dir } = await extractVerified(file, options.onProgress ?? (() => {}), accept);
    const staged = (sha: string) => join(dir, manifest.images.find((i) => i.sha256 === sha)!.path);
    const { kernel, initrd, rootfs } = manifest.compat;
    if (!checked)
      retake = misfit(manifest, await host.probe({ kernel: staged(kernel.sha256), initrd: staged(initrd.sha256) }));
    const installed = new Map<string, string>();
    for (const image of manifest.images) {
      const target = join(paths.images('hub'), image.path.slice('images/'.length));
      installed.set(image.sha256, target);
      if (existsSync(target)) continue; // content-addressed: the same bytes are there
      // a failure below takes it back out, and its dir when it made it
      if (await mkdir(dirname(target), { recursive: true })) made.push(dirname(target));
      await rename(join(dir, image.path), target);
      moved.push({ from: join(dir, image.path), to: target });
    }
    const imagePath = (sha: string | undefined) => (sha ? installed.get(sha) : undefined);
    const metas = new Map<string, SnapshotMeta>();
    for (const link of manifest.chain) {
      const metaFile = join(dir, link.tag, 'meta.json');
      const meta: SnapshotMeta = parseMeta(await readFile(metaFile, 'utf8'), `${link.tag}/meta.json in the pack`);
      meta.tag = tagOf(link.tag);
      meta.vm = {
        ...meta.vm,
        kernel: imagePath(kernel.sha256)!,
        initrd: imagePath(initrd.sha256)!,
        ...(rootfs ? { rootfs: imagePath(rootfs.sha256)! } : {}),
      };
      await writeFile(metaFile, `${JSON.stringify(meta, null, 2)}\n`);
      metas.set(link.tag, meta);
    }
    for (const link of manifest.chain) {
      const final = join(paths.snapshots(), tagOf(link.tag));
      if (existsSync(final)) {
        // the store's sweep removes a trash dir whose process died before it could
        const aside = join(
          paths.snapshots(),
          `.trash-${tagOf(link.tag)}-${process.pid}-${randomBytes(4).toString('hex')}`,
        );
        await rename(final, aside);
        moved.push({ from: final, to: aside });
        replaced.push(aside);
      }
      if (retake === undefined) {
        await rename(join(dir, link.tag), final);
        moved.push({ from: join(dir, link.tag), to: final });
        continue;
      }
      const meta = metas.get(link.tag)!;
      const started = performance.now();
      await host.retake(meta.tag, meta);
      retaken = { reason: retake, ms: Math.round(performance.now() - started) };
    }
    await Promise.all(replaced.map((aside) => rm(aside, { recursive: true, force: true })));
    return { manifest, tags: manifest.chain.map((l) => tagOf(l.tag)), ...(retaken ? { retaken } : {}) };
  } catch (err) {
    for (const { from, to } of moved.reverse()) await rename(to, from).catch(() => {});
    for (const path of made) await rmdir(path).catch(() => {});
    if ((err as NodeJS.ErrnoException).code === 'ENOSPC') {
      throw new ForkdError('FORKD_ERR_LIMIT', `the disk of ${paths.root} filled up while ${file} was unpacked`, {
        hint: 'free some space (forkd rmi old snapshots) or point FORKD_HOME at a larger disk; nothing was installed',
        cause: err,
      });
    }
    throw err;
  } finally {
    if (staging) await rm(staging, { recursive: true, force: true });
    unregister();
  }
}
