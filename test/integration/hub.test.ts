import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { StatePaths } from '../../src/engine/state-dir.js';
import type { StartedVm } from '../../src/engine/vmm/vm.js';
import type { PackManifest } from '../../src/hub/manifest.js';
import { unpack } from '../../src/hub/unpack.js';
import { IsolatedHome, NOTHING_LEFT } from '../helpers/isolated-home.js';

const home = new IsolatedHome();
const engine = home.engine;
const cli = join(import.meta.dirname, '../../bin/forkd.js');

/** What a child of the snapshot holds: a file, a 4 MiB blob's checksum, and a process started in the parent. */
const WARMUP =
  'echo packed > /tmp/state; dd if=/dev/urandom of=/tmp/blob bs=1M count=4 2>/dev/null; md5sum /tmp/blob > /tmp/blob.md5; (while :; do sleep 1; done) > /dev/null 2>&1 & echo $! > /tmp/sleeper';

async function childState(tag: string): Promise<string> {
  const [vm] = await engine.fork(tag, 1);
  try {
    const r = await (vm as StartedVm).exec(
      'cat /tmp/state; md5sum -c /tmp/blob.md5; kill -0 $(cat /tmp/sleeper) && echo sleeper-alive',
    );
    expect(r.exitCode).toBe(0);
    return r.stdout.toString();
  } finally {
    await vm!.kill();
  }
}

const tags = async () => (await engine.snapshots.list()).map((s) => s.tag).sort();

beforeAll(async () => {
  await engine.snapshot('hub-root', { warmup: WARMUP });
});

afterAll(async () => {
  for (const s of (await engine.snapshots.list()).filter((s) => !s.meta.parent)) {
    await engine.removeSnapshot(s.tag, { cascade: true });
  }
  expect(home.leftovers()).toEqual(NOTHING_LEFT);
  home.remove();
});

describe('forkd pack / unpack', () => {
  test('round trip: pack, rmi, unpack, fork gives the same files and memory-resident state', async () => {
    const before = await childState('hub-root');
    expect(before).toBe('packed\n/tmp/blob: OK\nsleeper-alive\n');
    const out = join(home.root, 'hub-root.forkd.tar.zst');
    const packed = await engine.pack('hub-root', out);
    expect(packed.manifest.chain.map((l) => l.tag)).toEqual(['hub-root']);
    expect(packed.manifest.images.map((i) => i.path.split('/')[2])).toEqual(['bzImage', 'initramfs.cpio']);
    const memory = packed.manifest.chain[0]!.files.find((f) => f.path === 'hub-root/memory.bin')!;
    expect(memory).toMatchObject({ size: 256 * 1024 * 1024, sparse: true });
    expect(packed.bytes).toBeLessThan(memory.size / 4); // zero runs are not stored

    // standard tools read it: every file's sha256 is the manifest's, and memory comes back sparse
    const plain = join(home.root, 'plain');
    mkdirSync(plain);
    execFileSync('sh', ['-c', `zstd -dcq '${out}' | tar -x -C '${plain}'`]);
    const manifest = JSON.parse(readFileSync(join(plain, 'manifest.json'), 'utf8')) as typeof packed.manifest;
    expect(manifest).toEqual(packed.manifest);
    for (const file of [...manifest.chain[0]!.files, ...manifest.images]) {
      const sum = execFileSync('sha256sum', [join(plain, file.path)], { encoding: 'utf8' }).split(' ')[0];
      expect(sum, file.path).toBe(file.sha256);
    }
    const extracted = statSync(join(plain, 'hub-root/memory.bin'));
    expect(extracted.blocks * 512).toBeLessThan(extracted.size / 4);

    await engine.removeSnapshot('hub-root');
    const unpacked = await engine.unpack(out);
    expect(unpacked.tags).toEqual(['hub-root']);
    expect(await childState('hub-root')).toBe(before);
  });

  test('a chain packs and unpacks as a chain', async () => {
    const [source] = await engine.fork('hub-root', 1);
    await source!.exec('echo linked > /tmp/state');
    await engine.branch(source!, 'hub-link', 'diff');
    await source!.kill();
    const out = join(home.root, 'hub-link.forkd.tar.zst');
    const packed = await engine.pack('hub-link', out);
    expect(packed.manifest.chain.map((l) => [l.tag, l.parent])).toEqual([
      ['hub-root', null],
      ['hub-link', 'hub-root'],
    ]);
    expect(packed.manifest.chain[1]!.files.map((f) => f.path)).toEqual([
      'hub-link/meta.json',
      'hub-link/vmstate',
      'hub-link/memory.diff',
    ]);
    await engine.removeSnapshot('hub-root', { cascade: true });
    expect(await tags()).toEqual([]);
    expect((await engine.unpack(out)).tags).toEqual(['hub-root', 'hub-link']);
    expect(await engine.describe('hub-link')).toMatchObject({ depth: 1, parent: 'hub-root' });
    expect(await childState('hub-link')).toBe('linked\n/tmp/blob: OK\nsleeper-alive\n');
    expect(await childState('hub-root')).toBe('packed\n/tmp/blob: OK\nsleeper-alive\n');

    await expect(engine.unpack(out, { tag: 'renamed' })).rejects.toMatchObject({
      code: 'FORKD_ERR_BAD_INPUT',
      message: expect.stringContaining('a chain of 2'),
    });
  });

  test('an existing tag is refused without --force and left as it was; --force replaces it; --tag installs a copy', async () => {
    const out = join(home.root, 'hub-root.forkd.tar.zst');
    const id = (await engine.snapshots.get('hub-root')).meta.id;
    await expect(engine.unpack(out)).rejects.toMatchObject({
      code: 'FORKD_ERR_CONFLICT',
      message: 'snapshot hub-root already exists',
    });
    expect((await engine.snapshots.get('hub-root')).meta.id).toBe(id);
    expect(home.entries('tmp')).toEqual([]);

    await engine.removeSnapshot('hub-link');
    expect((await engine.unpack(out, { force: true })).tags).toEqual(['hub-root']);
    expect(home.entries('snapshots').filter((n) => n.startsWith('.'))).toEqual([]);
    expect((await engine.unpack(out, { tag: 'hub-copy' })).tags).toEqual(['hub-copy']);
    expect(await childState('hub-copy')).toBe('packed\n/tmp/blob: OK\nsleeper-alive\n');
    await engine.removeSnapshot('hub-copy');
  });

  test('a disk that fills up during unpack: a clear error, no staging left, the installed version untouched', async () => {
    const small = join(home.root, 'small');
    mkdirSync(small);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=12m', 'tmpfs', small]);
    try {
      const paths = new StatePaths(small);
      const previous = join(paths.snapshots(), 'hub-root');
      mkdirSync(previous);
      writeFileSync(join(previous, 'marker'), 'the version installed before');
      const pack = join(home.root, 'hub-root.forkd.tar.zst');
      const { compat } = JSON.parse(
        execFileSync('sh', ['-c', `zstd -dcq '${pack}' | tar -xO manifest.json`], { encoding: 'utf8' }),
      ) as PackManifest;
      const host = { accel: compat.accel as 'tcg' | 'kvm', qemuVersion: compat.qemuVersion }; // this host's, as it packed it
      const err: unknown = await unpack(pack, paths, host, { force: true }).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'FORKD_ERR_LIMIT', message: expect.stringContaining('filled up') });
      expect(readFileSync(join(previous, 'marker'), 'utf8')).toBe('the version installed before');
      expect(readdirSync(paths.snapshots())).toEqual(['hub-root']);
      expect(readdirSync(paths.tmp())).toEqual([]);
    } finally {
      execFileSync('umount', [small]);
    }
  });

  test('the CLI: pack and unpack with --json; a missing pack file is a clear error', () => {
    const out = join(home.root, 'cli.forkd.tar.zst');
    const run = (args: string[]) =>
      execFileSync(process.execPath, [cli, ...args], {
        env: home.env(),
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe'],
      });
    const packed = JSON.parse(run(['pack', '--tag', 'hub-root', '--out', out, '--json'])) as {
      file: string;
      bytes: number;
    };
    expect(packed).toMatchObject({ file: out, bytes: statSync(out).size });
    const unpacked = JSON.parse(run(['unpack', out, '--tag', 'hub-cli', '--json'])) as { tags: string[] };
    expect(unpacked.tags).toEqual(['hub-cli']);
    expect(run(['rmi', 'hub-cli'])).toBe('removed hub-cli\n');
    let failure = '';
    try {
      run(['unpack', join(home.root, 'nope.forkd.tar.zst')]);
    } catch (err) {
      failure = String((err as { stderr: string }).stderr);
    }
    expect(failure).toContain('nope.forkd.tar.zst');
  });
});
