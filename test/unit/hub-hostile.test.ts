import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  createWriteStream,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { compress } from '@mongodb-js/zstd';
import { pack as tarPack, type Header } from 'tar-stream';
import { afterAll, describe, expect, test } from 'vitest';
import { StatePaths } from '../../src/common/state-dir.js';
import { PACK_FORMAT, type PackManifest } from '../../src/hub/manifest.js';
import { unpack, type PackHost } from '../../src/hub/unpack.js';
import { compressFrames } from '../../src/hub/zstd-frames.js';

const root = mkdtempSync(join(tmpdir(), 'forkd-hostile-'));
const paths = new StatePaths(join(root, 'state'));
const facts = { accel: 'tcg' as const, qemuVersion: '7.2.22' };
/** A host whose facts are known without a probe boot (as on one without KVM). */
const host: PackHost = {
  known: () => Promise.resolve(facts),
  probe: () => Promise.reject(new Error('no probe')),
  retake: () => Promise.reject(new Error('no retake')),
};
/** Files a hostile pack might try to write: none of them may appear. */
const outside = join(root, 'outside');

afterAll(() => rmSync(root, { recursive: true, force: true }));

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

interface RawEntry {
  header: Partial<Header> & Pick<Header, 'name'>;
  data?: Buffer;
}

/** A pack written entry by entry, exactly as given: the tool for building bad ones. */
async function rawPack(name: string, entries: RawEntry[]): Promise<string> {
  const file = join(root, `${name}.forkd.tar.zst`);
  const pack = tarPack();
  const writing = pipeline(
    pack,
    (bytes: AsyncIterable<unknown>) => compressFrames(bytes as AsyncIterable<Buffer>),
    createWriteStream(file),
  );
  for (const { header, data } of entries) {
    const body = data ?? Buffer.alloc(0);
    await pipeline(Readable.from([body]), pack.entry({ mode: 0o644, ...header, size: header.size ?? body.length }));
  }
  pack.finalize();
  await writing;
  return file;
}

const META = {
  format: 1,
  tag: 't',
  created: new Date().toISOString(),
  parent: null,
  image: { name: 'base', kernelHash: 'k', initrdHash: 'i' },
  memoryMiB: 256,
  vcpus: 1,
  accel: 'tcg',
  qemuVersion: '7.2.22',
  machine: 'microvm',
  vm: { kernel: '/where/it/was/packed/bzImage', initrd: '/where/it/was/packed/initramfs.cpio' },
  ports: [],
  warmup: null,
  vmstateBytes: 5,
};
const FILES = {
  't/meta.json': Buffer.from(JSON.stringify(META)),
  't/vmstate': Buffer.from('state'),
  't/memory.bin': Buffer.alloc(8192, 1),
};
const KERNEL = Buffer.from('a kernel');
const INITRD = Buffer.from('an initramfs');
const IMAGES = {
  [`images/${sha256(KERNEL)}/bzImage`]: KERNEL,
  [`images/${sha256(INITRD)}/initramfs.cpio`]: INITRD,
};
const listed = (files: Record<string, Buffer>) =>
  Object.entries(files).map(([path, data]) => ({ path, size: data.length, sha256: sha256(data), sparse: false }));

function manifest(overrides: Partial<PackManifest> = {}): PackManifest {
  return {
    format: PACK_FORMAT,
    tag: 't',
    created: new Date().toISOString(),
    engine: 'test',
    compat: {
      accel: 'tcg',
      qemuVersion: '7.2.22',
      machine: 'microvm',
      memoryMiB: 256,
      image: 'base',
      kernel: { hash: 'k', sha256: sha256(KERNEL) },
      initrd: { hash: 'i', sha256: sha256(INITRD) },
      rootfs: null,
    },
    chain: [{ tag: 't', parent: null, files: listed(FILES) }],
    images: listed(IMAGES),
    ...overrides,
  };
}

const manifestEntry = (m: unknown): RawEntry => ({
  header: { name: 'manifest.json' },
  data: Buffer.from(JSON.stringify(m)),
});
/** A chain of two links taken under KVM (only its manifest is ever read). */
function kvmChain(): PackManifest {
  const m = manifest();
  m.compat.accel = 'kvm';
  const root = {
    tag: 't0',
    parent: null,
    files: listed({
      't0/meta.json': FILES['t/meta.json'],
      't0/vmstate': FILES['t/vmstate'],
      't0/memory.bin': FILES['t/memory.bin'],
    }),
  };
  const head = {
    tag: 't',
    parent: 't0',
    files: listed({
      't/meta.json': FILES['t/meta.json'],
      't/vmstate': FILES['t/vmstate'],
      't/memory.diff': Buffer.from('diff'),
    }),
  };
  m.chain = [root, head];
  return m;
}
const fileEntries = (): RawEntry[] =>
  Object.entries({ ...FILES, ...IMAGES }).map(([name, data]) => ({ header: { name }, data }));

/** Unpacks `file` and returns the error; checks that nothing became visible or was left behind. */
async function refused(file: string, on: PackHost = host): Promise<{ code: string; message: string }> {
  const err = (await unpack(file, paths, on).then(
    () => undefined,
    (e: unknown) => e,
  )) as { code: string; message: string } | undefined;
  expect(err, 'the pack was accepted').toBeDefined();
  expect(readdirSync(paths.snapshots())).toEqual([]);
  expect(readdirSync(paths.images('hub'))).toEqual([]);
  expect(readdirSync(paths.tmp())).toEqual([]); // the staging dir is gone
  expect(existsSync(outside)).toBe(false);
  expect(existsSync('/tmp/forkd-hostile-abs')).toBe(false);
  return err!;
}

describe('a hostile or broken pack is refused with a clear error, and nothing is written', () => {
  test('an entry that climbs out with ..', async () => {
    const file = await rawPack('traversal', [
      manifestEntry(manifest()),
      { header: { name: '../../outside' }, data: Buffer.from('x') },
    ]);
    expect(await refused(file)).toMatchObject({
      code: 'FORKD_ERR_CORRUPT',
      message: expect.stringContaining('"../../outside"'),
    });
  });

  test('an absolute path', async () => {
    const file = await rawPack('absolute', [
      manifestEntry(manifest()),
      { header: { name: '/tmp/forkd-hostile-abs' }, data: Buffer.from('x') },
    ]);
    expect(await refused(file)).toMatchObject({ code: 'FORKD_ERR_CORRUPT' });
  });

  test.each([
    ['symlink', { name: 't/memory.bin', type: 'symlink', linkname: '/etc/passwd' }],
    ['hardlink', { name: 't/memory.bin', type: 'link', linkname: '../../outside' }],
    ['directory', { name: 't/', type: 'directory' }],
  ] as const)('a %s entry', async (kind, header) => {
    const file = await rawPack(kind, [manifestEntry(manifest()), { header: { ...header } }]);
    expect(await refused(file)).toMatchObject({
      code: 'FORKD_ERR_CORRUPT',
      message: expect.stringContaining('only files are allowed'),
    });
  });

  test('a manifest that lists paths outside the pack layout, or unsafe tags', async () => {
    const evil = manifest();
    evil.chain[0]!.files[0]!.path = 't/../../outside';
    expect(await refused(await rawPack('evil-path', [manifestEntry(evil)]))).toMatchObject({
      code: 'FORKD_ERR_CORRUPT',
    });
    const badTag = manifest({ tag: '../x' });
    badTag.chain[0]!.tag = '../x';
    expect(await refused(await rawPack('evil-tag', [manifestEntry(badTag)]))).toMatchObject({
      code: 'FORKD_ERR_BAD_INPUT',
    });
  });

  test('a manifest whose kernel is not among the images it carries', async () => {
    const m = manifest();
    m.compat.kernel.sha256 = 'f'.repeat(64);
    expect(await refused(await rawPack('no-kernel', [manifestEntry(m), ...fileEntries()]))).toMatchObject({
      message: expect.stringContaining('its kernel image is not in the pack'),
    });
  });

  test('an oversized manifest', async () => {
    const big = { ...manifest(), padding: 'x'.repeat(2 * 1024 * 1024) };
    expect(await refused(await rawPack('big-manifest', [manifestEntry(big)]))).toMatchObject({
      code: 'FORKD_ERR_CORRUPT',
      message: expect.stringContaining('at most'),
    });
  });

  test('a manifest that is not the first entry', async () => {
    const file = await rawPack('late-manifest', [...fileEntries(), manifestEntry(manifest())]);
    expect(await refused(file)).toMatchObject({ message: expect.stringContaining('not manifest.json') });
  });

  test('a newer format version', async () => {
    const file = await rawPack('future', [manifestEntry(manifest({ format: PACK_FORMAT + 1 })), ...fileEntries()]);
    expect(await refused(file)).toMatchObject({
      code: 'FORKD_ERR_INCOMPATIBLE',
      message: expect.stringContaining(`format ${PACK_FORMAT + 1}`),
    });
  });

  test('a pack for another architecture is refused, naming it', async () => {
    const arm = manifest();
    arm.compat.arch = 'aarch64';
    expect(await refused(await rawPack('arm', [manifestEntry(arm), ...fileEntries()]))).toMatchObject({
      code: 'FORKD_ERR_INCOMPATIBLE',
      message: 'the pack t holds aarch64 guests; forkd runs x86_64',
    });
  });

  test('a chain made for another host is refused: what differs, and why it cannot be taken again', async () => {
    const err = await refused(await rawPack('kvm-chain', [manifestEntry(kvmChain()), ...fileEntries()]));
    expect(err).toMatchObject({
      code: 'FORKD_ERR_INCOMPATIBLE',
      message:
        "the pack t is a chain of 2 snapshots and the pack's snapshot was taken with accelerator kvm (this host runs tcg): its diff links cannot be taken again here",
    });
  });

  test('a file whose bytes do not match their sha256', async () => {
    const entries = fileEntries();
    entries[2]!.data = Buffer.alloc(8192, 2); // same size, other bytes
    const file = await rawPack('tampered', [manifestEntry(manifest()), ...entries]);
    expect(await refused(file)).toMatchObject({
      message: expect.stringContaining('t/memory.bin does not match its sha256'),
    });
  });

  test('the same name twice, and a file the manifest does not list', async () => {
    const twice = await rawPack('duplicate', [manifestEntry(manifest()), ...fileEntries(), fileEntries()[0]!]);
    expect(await refused(twice)).toMatchObject({ message: expect.stringContaining('does not list (or lists once)') });
    const extra = await rawPack('extra', [
      manifestEntry(manifest()),
      ...fileEntries(),
      { header: { name: 't/extra' }, data: Buffer.from('x') },
    ]);
    expect(await refused(extra)).toMatchObject({ code: 'FORKD_ERR_CORRUPT' });
  });

  test('a missing file', async () => {
    const file = await rawPack('missing', [manifestEntry(manifest()), ...fileEntries().slice(0, 2)]);
    expect(await refused(file)).toMatchObject({ message: expect.stringContaining('it lacks t/memory.bin') });
  });

  test('a truncated pack, and bytes that are not zstd at all', async () => {
    const file = await rawPack('truncated', [manifestEntry(manifest()), ...fileEntries()]);
    const { size } = await import('node:fs').then((fs) => fs.statSync(file));
    truncateSync(file, Math.floor(size / 2));
    expect(await refused(file)).toMatchObject({ code: 'FORKD_ERR_CORRUPT', message: expect.stringContaining('zstd') });
    const junk = join(root, 'junk.forkd.tar.zst');
    writeFileSync(junk, 'this is not a pack at all');
    expect(await refused(junk)).toMatchObject({ message: expect.stringContaining('bad frame magic') });
  });

  test('a frame that would expand far beyond its size (a decompression bomb)', async () => {
    // a frame of RLE blocks: 4 bytes of input claim 128 KiB each
    const header = Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x58]);
    const rle = (last: number) => {
      const h = (last | (1 << 1) | ((128 * 1024) << 3)) >>> 0;
      return Buffer.from([h & 0xff, (h >> 8) & 0xff, (h >> 16) & 0xff, 0]);
    };
    const blocks = Array.from({ length: 200 }, (_, i) => rle(i === 199 ? 1 : 0));
    const bomb = join(root, 'bomb.forkd.tar.zst');
    writeFileSync(bomb, Buffer.concat([header, ...blocks]));
    expect(await refused(bomb)).toMatchObject({ message: expect.stringContaining('a frame over') });
  });

  test('a sparse map that points past the end of its file', async () => {
    const m = manifest();
    m.chain[0]!.files[2]!.sparse = true;
    const map = Buffer.alloc(512);
    map.write('1\n99999999\n8192\n');
    const file = await rawPack('bad-map', [
      manifestEntry(m),
      ...fileEntries().slice(0, 2),
      {
        header: {
          name: 't/GNUSparseFile.0/memory.bin',
          pax: {
            'GNU.sparse.major': '1',
            'GNU.sparse.minor': '0',
            'GNU.sparse.name': 't/memory.bin',
            'GNU.sparse.realsize': '8192',
          },
        },
        data: Buffer.concat([map, FILES['t/memory.bin']]),
      },
    ]);
    expect(await refused(file)).toMatchObject({ message: expect.stringContaining('bad map') });
  });
});

describe('taking a snapshot again, and pinned names', () => {
  test('a retake that fails takes back the images it installed and restores the snapshot it replaced', async () => {
    const state = new StatePaths(join(root, 'retake-fails'));
    const previous = join(state.snapshots(), 't');
    mkdirSync(previous, { recursive: true });
    writeFileSync(join(previous, 'marker'), 'the version installed before');
    const kvm = manifest();
    kvm.compat.accel = 'kvm';
    const failing: PackHost = { ...host, retake: () => Promise.reject(new Error('the warm-up failed')) };
    const file = await rawPack('kvm-retake-fails', [manifestEntry(kvm), ...fileEntries()]);
    await expect(unpack(file, state, failing, { force: true })).rejects.toThrow('the warm-up failed');
    expect(readFileSync(join(previous, 'marker'), 'utf8')).toBe('the version installed before');
    expect(readdirSync(state.snapshots())).toEqual(['t']);
    expect(readdirSync(state.images('hub'))).toEqual([]);
    expect(readdirSync(state.tmp())).toEqual([]);
  });

  test('a pack served under a pinned name that holds another snapshot is refused', async () => {
    const file = await rawPack('not-the-pinned', [manifestEntry(manifest()), ...fileEntries()]);
    const err = await unpack(file, paths, host, { head: 'postgres' }).catch((e: unknown) => e);
    expect(err).toMatchObject({
      code: 'FORKD_ERR_CORRUPT',
      message: 'the pack pinned as postgres holds t (made from base)',
    });
    expect(readdirSync(paths.snapshots())).toEqual([]);
  });
});

describe('input that is not a pack is refused before the host is asked, and nothing is created', () => {
  /** A state dir that does not exist yet, and a host that records whether it was asked. */
  function fresh(): { paths: StatePaths; asked: string[]; on: PackHost } {
    const asked: string[] = [];
    const on: PackHost = {
      known: (sha) => (asked.push(`known ${sha}`), Promise.resolve(facts)),
      probe: () => (asked.push('probe'), Promise.resolve(facts)),
      retake: (tag) => (asked.push(`retake ${tag}`), Promise.resolve()),
    };
    return { paths: new StatePaths(join(root, `fresh-${Math.random().toString(36).slice(2)}`)), asked, on };
  }

  async function notAPack(file: string): Promise<{ code: string; message: string; hint?: string }> {
    const { paths: state, asked, on } = fresh();
    const err = (await unpack(file, state, on).then(
      () => undefined,
      (e: unknown) => e,
    )) as { code: string; message: string; hint?: string } | undefined;
    expect(err, 'the input was accepted').toBeDefined();
    expect(asked).toEqual([]);
    expect(existsSync(state.root)).toBe(false);
    return err!;
  }

  test('a path that does not exist, a directory, and a FIFO (refused without waiting for a writer)', async () => {
    expect(await notAPack(join(root, 'nope', 'x.forkd.tar.zst'))).toMatchObject({
      code: 'FORKD_ERR_NOT_FOUND',
      message: `no pack at ${join(root, 'nope', 'x.forkd.tar.zst')}`,
      hint: expect.stringContaining('forkd pack'),
    });
    expect(await notAPack(root)).toMatchObject({
      code: 'FORKD_ERR_BAD_INPUT',
      message: `${root} is a directory, not a pack`,
    });
    const fifo = join(root, 'fifo');
    execFileSync('mkfifo', [fifo]);
    expect(await notAPack(fifo)).toMatchObject({
      code: 'FORKD_ERR_BAD_INPUT',
      message: expect.stringContaining('not a regular file'),
    });
  });

  test('an empty file, garbage, a truncated header, zstd that is not tar, and a manifest that is not JSON', async () => {
    const write = (name: string, data: Buffer | string) => {
      const file = join(root, name);
      writeFileSync(file, data);
      return file;
    };
    const valid = await rawPack('valid', [manifestEntry(manifest()), ...fileEntries()]);
    const cases: Array<[string, string]> = [
      [write('empty.forkd.tar.zst', ''), 'it is empty'],
      [write('garbage.forkd.tar.zst', randomBytes(64 * 1024)), 'bad frame magic'],
      [write('head.forkd.tar.zst', readFileSync(valid).subarray(0, 20)), 'ends inside a frame'],
      [write('not-tar.forkd.tar.zst', await compress(Buffer.alloc(4096, 'x'))), 'not a valid tar stream'],
      [
        await rawPack('not-json', [{ header: { name: 'manifest.json' }, data: Buffer.from('{"format": 1,') }]),
        'not JSON',
      ],
    ];
    for (const [file, why] of cases) {
      const err = await notAPack(file);
      expect(err, file).toMatchObject({
        code: 'FORKD_ERR_CORRUPT',
        message: expect.stringMatching(new RegExp(`^${file} is not a forkd pack \\(.*${why}`)),
        hint: expect.stringContaining('forkd pack writes'),
      });
    }
  });
});

describe('the host facts a pack needs cost no build', () => {
  test('a refusal by the known facts comes before anything is staged', async () => {
    const probed: string[] = [];
    const on: PackHost = { ...host, probe: () => (probed.push('probe'), Promise.resolve(facts)) };
    const file = await rawPack('kvm-early', [manifestEntry(kvmChain()), ...fileEntries()]);
    expect(await refused(file, on)).toMatchObject({ code: 'FORKD_ERR_INCOMPATIBLE' });
    expect(probed).toEqual([]);
  });

  test("where only a probe boot can tell, it boots the pack's own images, staged and verified", async () => {
    const seen: Array<{ kernel: Buffer; initrd: Buffer }> = [];
    const retaken: Array<{ tag: string; kernel: string }> = [];
    const probing = (answer: typeof facts): PackHost => ({
      known: () => Promise.resolve(undefined),
      probe: (guest) => {
        seen.push({ kernel: readFileSync(guest.kernel), initrd: readFileSync(guest.initrd) });
        return Promise.resolve(answer);
      },
      retake: (tag, meta) => (retaken.push({ tag, kernel: meta.vm.kernel }), Promise.resolve()),
    });
    const kvm = manifest();
    kvm.compat.accel = 'kvm';
    const elsewhere = new StatePaths(join(root, 'probed-retaken'));
    const r = await unpack(
      await rawPack('kvm-probed', [manifestEntry(kvm), ...fileEntries()]),
      elsewhere,
      probing(facts),
    );
    expect(r.retaken?.reason).toBe("the pack's snapshot was taken with accelerator kvm (this host runs tcg)");
    expect(seen).toEqual([{ kernel: KERNEL, initrd: INITRD }]);
    expect(retaken).toEqual([{ tag: 't', kernel: join(elsewhere.images('hub'), sha256(KERNEL), 'bzImage') }]);
    expect(readdirSync(elsewhere.tmp())).toEqual([]);
    seen.length = 0;

    const state = new StatePaths(join(root, 'probed-install'));
    const file = await rawPack('probed', [manifestEntry(manifest()), ...fileEntries()]);
    expect((await unpack(file, state, probing(facts))).tags).toEqual(['t']);
    const meta = JSON.parse(readFileSync(join(state.snapshots(), 't', 'meta.json'), 'utf8')) as typeof META;
    expect(meta.vm).toEqual({
      kernel: join(state.images('hub'), sha256(KERNEL), 'bzImage'),
      initrd: join(state.images('hub'), sha256(INITRD), 'initramfs.cpio'),
    });
    expect(readFileSync(meta.vm.kernel)).toEqual(KERNEL);
    expect(readdirSync(state.tmp())).toEqual([]);
  });
});
