/**
 * forkd pack / unpack of a 2 GiB memory file: peak RSS and throughput, next to `tar | zstd -3` on
 * the same files, in one run:
 *   npm run build && npm run bench:hub
 * The snapshot is a real one (2 GiB RAM), but its memory.bin is then filled from the host with
 * 768 MiB of random bytes and 768 MiB of repeated text (512 MiB stay zero), so the numbers cover
 * incompressible, compressible and sparse data. It is packed, not restored.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, openSync, rmSync, statSync, writeSync, closeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { Engine } from '../src/engine/engine.js';

const MiB = 1024 * 1024;
const tag = `bench-hub-${process.pid}`;
const cli = join(import.meta.dirname, '../bin/forkd.js');
await using engine = new Engine();
const work = join(engine.paths.tmp(), `bench-hub-${process.pid}`);
mkdirSync(work, { recursive: true });

function timed(command: string, args: string[]): { ms: number; stdout: string } {
  const started = performance.now();
  const r = spawnSync(command, args, { encoding: 'utf8', maxBuffer: 64 * MiB });
  if (r.status !== 0) throw new Error(`${command} ${args.join(' ')} failed: ${r.stderr}`);
  return { ms: performance.now() - started, stdout: r.stdout };
}

try {
  console.log(
    `machine: ${cpus().length} x ${cpus()[0]?.model}; zstd ${execFileSync('zstd', ['-V'], { encoding: 'utf8' }).trim()}`,
  );
  const info = await engine.snapshot(tag, { memoryMiB: 2048, warmup: 'true' });
  const fd = openSync(info.memoryFile, 'r+');
  const text = Buffer.alloc(MiB, 'forkd snapshot pack bench: some repetitive guest data\n');
  for (let i = 0; i < 1536; i++) writeSync(fd, i < 768 ? randomBytes(MiB) : text, 0, MiB, (256 + i) * MiB);
  closeSync(fd);
  const logical = statSync(info.memoryFile).size;
  console.log(`memory.bin: ${logical / MiB} MiB, 1536 MiB of it data (768 random, 768 text), the rest zero`);

  const pack = join(work, 'bench.forkd.tar.zst');
  const packed = timed(process.execPath, [cli, 'pack', '--tag', tag, '--out', pack, '--json']);
  const packRss = (JSON.parse(packed.stdout) as { peak_rss_bytes: number }).peak_rss_bytes;
  const unpacked = timed(process.execPath, [cli, 'unpack', pack, '--tag', `${tag}-copy`, '--json']);
  const unpackRss = (JSON.parse(unpacked.stdout) as { peak_rss_bytes: number }).peak_rss_bytes;

  // the baseline: the same files through GNU tar (sparse) and zstd -3, one thread
  const tarZst = join(work, 'baseline.tar.zst');
  const files = [
    '-C',
    info.dir,
    '.',
    '-C',
    join(info.meta.vm.kernel, '..'),
    '.',
    '-C',
    join(info.meta.vm.initrd, '..'),
    '.',
  ];
  const tarPack = timed('sh', [
    '-c',
    `tar --sparse -cf - ${files.map((f) => `'${f}'`).join(' ')} | zstd -3 -T1 -q -o '${tarZst}'`,
  ]);
  const extractDir = join(work, 'extract');
  mkdirSync(extractDir);
  const tarUnpack = timed('sh', ['-c', `zstd -dcq '${tarZst}' | tar -x -C '${extractDir}'`]);

  const data = 1536 * MiB;
  const rate = (ms: number) => `${(data / MiB / (ms / 1000)).toFixed(0)} MiB/s of data`;
  const row = (what: string, ms: number, extra: string) =>
    console.log(`${what.padEnd(28)} ${(ms / 1000).toFixed(1).padStart(6)} s  ${rate(ms).padEnd(20)} ${extra}`);
  console.log('');
  row(
    'forkd pack',
    packed.ms,
    `pack ${(statSync(pack).size / MiB).toFixed(0)} MiB, peak RSS ${(packRss / MiB).toFixed(0)} MiB`,
  );
  row('tar --sparse | zstd -3', tarPack.ms, `pack ${(statSync(tarZst).size / MiB).toFixed(0)} MiB`);
  row('forkd unpack (sha256 checked)', unpacked.ms, `peak RSS ${(unpackRss / MiB).toFixed(0)} MiB`);
  row('zstd -d | tar -x', tarUnpack.ms, '');
  console.log(
    `\npeak RSS under 200 MiB: pack ${packRss < 200 * MiB ? 'yes' : 'NO'}, unpack ${unpackRss < 200 * MiB ? 'yes' : 'NO'}`,
  );
} finally {
  rmSync(work, { recursive: true, force: true });
  for (const t of [tag, `${tag}-copy`]) await engine.removeSnapshot(t).catch(() => {});
}
