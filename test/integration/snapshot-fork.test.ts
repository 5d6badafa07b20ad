import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, test, vi } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import type { StartedVm } from '../../src/engine/vmm/vm.js';
import type { ForkdError } from '../../src/errors.js';
import { IsolatedHome, NOTHING_LEFT } from '../helpers/isolated-home.js';

const home = new IsolatedHome();
const engine = home.engine;
const children: StartedVm[] = [];

/** Forks and remembers the children so every test's VMs are killed even when it fails. */
async function fork(tag: string, n = 1): Promise<StartedVm[]> {
  const forked = await engine.fork(tag, n);
  children.push(...forked);
  return forked;
}

// The parent writes a file and starts a process that counts in its own memory.
const WARMUP = [
  'echo from-the-parent > /tmp/state',
  '(i=0; while :; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.05; done) >/dev/null 2>&1 & echo $! > /tmp/counter.pid',
  'sleep 1',
].join('; ');

beforeAll(async () => {
  await engine.snapshot('parent', { warmup: WARMUP });
});

afterEach(async () => {
  await Promise.all(children.splice(0).map((c) => c.kill()));
});

afterAll(async () => {
  await engine.close();
  for (const tag of readdirSync(home.paths.snapshots()))
    rmSync(join(home.paths.snapshots(), tag), { recursive: true, force: true });
  expect(home.leftovers()).toEqual(NOTHING_LEFT);
  home.remove();
});

describe('snapshot', () => {
  test('is listed with what a restore needs', async () => {
    const [info] = await engine.snapshots.list();
    expect(info).toMatchObject({
      tag: 'parent',
      meta: { tag: 'parent', parent: null, memoryMiB: 256, vcpus: 1, machine: 'microvm', warmup: WARMUP },
    });
    expect(info!.meta.accel).toMatch(/^(kvm|tcg)$/);
    expect(info!.meta.qemuVersion).toMatch(/^\d+\.\d+/);
    expect(info!.meta.image.kernelHash).toBeTruthy();
    // The memory file is sparse: far less on disk than the guest's 256 MiB.
    expect(info!.diskBytes).toBeGreaterThan(1024 * 1024);
    expect(info!.diskBytes).toBeLessThan(200 * 1024 * 1024);
  });

  test('refuses a tag that exists, and tags that are not tags', async () => {
    await expect(engine.snapshot('parent')).rejects.toMatchObject({ code: 'FORKD_ERR_CONFLICT' });
    for (const bad of ['', '-x', '.hidden', '../up', 'a/b', 'x'.repeat(65), 'sp ace']) {
      await expect(engine.snapshot(bad)).rejects.toMatchObject({ code: 'FORKD_ERR_BAD_INPUT' });
      await expect(engine.fork(bad)).rejects.toMatchObject({ code: 'FORKD_ERR_BAD_INPUT' });
    }
  });

  test('a failing warm-up leaves no snapshot and no staging dir', async () => {
    const err: ForkdError = await engine.snapshot('broken', { warmup: 'echo about to fail; exit 7' }).then(
      () => expect.unreachable(),
      (e: ForkdError) => e,
    );
    expect(err).toMatchObject({
      code: 'FORKD_ERR_SNAPSHOT',
      message: expect.stringMatching(/^step warm-up failed: exited 7[\s\S]*about to fail/),
    });
    expect(readdirSync(home.paths.snapshots())).toEqual(['parent']);
    rmSync(err.consoleLog!); // kept for the error to point at
  });
});

describe('fork', () => {
  test('children start with the parent state: its files and its running process, counting on', async () => {
    const [a, b] = await fork('parent', 2);
    for (const child of [a!, b!]) {
      expect((await child.readFile('/tmp/state')).toString()).toBe('from-the-parent\n');
      const alive = await child.exec('kill -0 $(cat /tmp/counter.pid) && cat /tmp/counter');
      expect(alive.exitCode).toBe(0);
      const first = Number(alive.stdout.toString());
      // The loop ran ~1 s in the parent: a child continues its count instead of starting over.
      expect(first).toBeGreaterThanOrEqual(3);
      await new Promise((resolve) => setTimeout(resolve, 400));
      expect(Number((await child.exec(['cat', '/tmp/counter'])).stdout.toString())).toBeGreaterThan(first);
    }
  });

  test("a child's writes are invisible to its siblings and to later forks", async () => {
    const [a, b] = await fork('parent', 2);
    await a!.writeFile('/tmp/state', 'changed-in-a\n');
    await a!.exec('echo only-a > /tmp/new-file');
    expect((await b!.readFile('/tmp/state')).toString()).toBe('from-the-parent\n');
    await expect(b!.readFile('/tmp/new-file')).rejects.toMatchObject({ agentCode: 'E_NOENT' });
    const [later] = await fork('parent');
    expect((await later!.readFile('/tmp/state')).toString()).toBe('from-the-parent\n');
  });

  test('8 children forked at once all answer, each with its own identity, clock and randomness', async () => {
    const eight = await fork('parent', 8);
    const answers = await Promise.all(
      eight.map((c) => c.exec(['sh', '-c', 'hostname; date +%s; head -c 16 /dev/urandom | od -An -tx1'])),
    );
    expect(answers.every((r) => r.exitCode === 0)).toBe(true);
    const lines = answers.map((r) => r.stdout.toString().split('\n'));
    expect(new Set(lines.map((l) => l[0])).size).toBe(8);
    expect(new Set(lines.map((l) => l[2])).size).toBe(8);
    for (const l of lines) expect(Math.abs(Number(l[1]) * 1000 - Date.now())).toBeLessThan(5000);
  });

  test('killing a child does not disturb the others', async () => {
    const [a, b, c] = await fork('parent', 3);
    await a!.kill();
    await expect(a!.exec(['true'])).rejects.toMatchObject({ code: 'FORKD_ERR_VM_STOPPED' });
    for (const child of [b!, c!])
      expect((await child.exec(['cat', '/tmp/state'])).stdout.toString()).toBe('from-the-parent\n');
  });

  test('a warm pool hands out ready children and refills', async () => {
    const pool = await engine.warmPool('parent', 2);
    expect(pool?.available).toBe(2);
    const [pooled] = await fork('parent');
    expect((await pooled!.readFile('/tmp/state')).toString()).toBe('from-the-parent\n');
    await pool!.filled();
    expect(pool!.available).toBe(2);
    await engine.warmPool('parent', 0);
  });
});

describe('bad input', () => {
  test('an unknown tag names the known ones', async () => {
    await expect(engine.fork('nope')).rejects.toMatchObject({
      code: 'FORKD_ERR_NOT_FOUND',
      hint: 'known tags: parent',
    });
  });

  test.each([0, -1, 1.5, 100_000])('n = %s is refused with the limit', async (n) => {
    await expect(engine.fork('parent', n)).rejects.toMatchObject({
      code: 'FORKD_ERR_LIMIT',
      message: expect.stringContaining('1 to 256'),
    });
  });

  test('a restore on another accelerator is refused with what differs', async () => {
    vi.stubEnv('FORKD_ACCEL', (await engine.snapshots.get('parent')).meta.accel === 'tcg' ? 'kvm' : 'tcg');
    const other = new Engine(home.paths);
    await expect(other.fork('parent')).rejects.toMatchObject({
      code: 'FORKD_ERR_INCOMPATIBLE',
      message: expect.stringMatching(
        /snapshot parent was taken with accelerator (tcg|kvm) \(this host runs (kvm|tcg)\)/,
      ),
    });
  });

  test("a snapshot that is still being written is not forkable; a dead writer's leftovers are swept", async () => {
    const staging = join(home.paths.snapshots(), `.staging-inprogress-${process.pid}-00000000`);
    const abandoned = join(home.paths.snapshots(), '.staging-ghost-999999999-00000000');
    mkdirSync(staging);
    mkdirSync(abandoned);
    try {
      expect((await engine.snapshots.list()).map((s) => s.tag)).toEqual(['parent']);
      await expect(engine.fork('inprogress')).rejects.toMatchObject({
        code: 'FORKD_ERR_CONFLICT',
        message: expect.stringContaining('being written'),
      });
      await expect(engine.fork('ghost')).rejects.toMatchObject({ code: 'FORKD_ERR_NOT_FOUND' });
      expect(readdirSync(home.paths.snapshots()).sort()).toEqual([basename(staging), 'parent']);
    } finally {
      rmSync(staging, { recursive: true });
    }
  });

  test('truncated or corrupt snapshot files are refused, and nothing is left running', async () => {
    const src = (await engine.snapshots.get('parent')).dir;
    const copy = (tag: string) => {
      const dir = join(home.paths.snapshots(), tag);
      execFileSync('cp', ['-a', '--sparse=always', src, dir]);
      const meta = join(dir, 'meta.json');
      writeFileSync(meta, readMeta(meta).replace('"tag": "parent"', `"tag": "${tag}"`));
      return dir;
    };
    const readMeta = (path: string) => execFileSync('cat', [path], { encoding: 'utf8' });

    truncateSync(join(copy('short-mem'), 'memory.bin'), 4096);
    await expect(engine.fork('short-mem')).rejects.toMatchObject({
      code: 'FORKD_ERR_CORRUPT',
      message: expect.stringContaining('memory.bin is 4096 bytes'),
    });

    truncateSync(join(copy('short-state'), 'vmstate'), 100);
    await expect(engine.fork('short-state')).rejects.toMatchObject({
      code: 'FORKD_ERR_CORRUPT',
      message: expect.stringContaining('vmstate is 100 bytes'),
    });

    const garbled = copy('garbled-state');
    const size = Number(execFileSync('stat', ['-c', '%s', join(garbled, 'vmstate')], { encoding: 'utf8' }));
    writeFileSync(join(garbled, 'vmstate'), Buffer.alloc(size, 0x5a));
    const err = await engine.fork('garbled-state').catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'FORKD_ERR_CORRUPT', hint: expect.stringContaining('forkd rmi garbled-state') });
    const log = (err as { consoleLog?: string }).consoleLog;
    if (log) rmSync(log, { force: true });

    writeFileSync(join(copy('bad-meta'), 'meta.json'), '{"format": 1, "tag": ');
    await expect(engine.fork('bad-meta')).rejects.toMatchObject({ code: 'FORKD_ERR_CORRUPT' });
    expect((await engine.snapshots.list()).map((s) => s.tag).sort()).toEqual([
      'garbled-state',
      'parent',
      'short-mem',
      'short-state',
    ]);

    for (const tag of ['short-mem', 'short-state', 'garbled-state', 'bad-meta']) await engine.snapshots.remove(tag);
    expect(readdirSync(home.paths.snapshots())).toEqual(['parent']);
    expect(home.qemuProcesses()).toEqual([]);
  });

  test('running out of space while snapshotting leaves nothing half-written', async () => {
    // A state dir on an 8 MiB tmpfs: the parent's RAM file cannot grow past it.
    const small = join(home.root, 'small');
    mkdirSync(small);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', small]);
    try {
      const cramped = new IsolatedHome(small);
      await expect(cramped.engine.snapshot('too-big')).rejects.toMatchObject({
        code: expect.stringMatching(/FORKD_ERR_(QEMU_EXITED|BOOT_TIMEOUT|SNAPSHOT)/),
      });
      expect(readdirSync(cramped.paths.snapshots())).toEqual([]);
      expect(cramped.qemuProcesses()).toEqual([]);
      expect(cramped.entries('run')).toEqual([]);
    } finally {
      execFileSync('umount', [small]);
      rmSync(small, { recursive: true, force: true });
    }
  });
});
