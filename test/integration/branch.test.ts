import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, test, vi } from 'vitest';
import type { BranchMode } from '../../src/api/types.js';
import type { StartedVm } from '../../src/engine/vmm/vm.js';
import { Engine } from '../../src/engine/engine.js';
import { StatePaths } from '../../src/common/state-dir.js';
import { IsolatedHome, NOTHING_LEFT } from '../helpers/isolated-home.js';

const home = new IsolatedHome();
const engine = home.engine;
const vms: StartedVm[] = [];

async function fork(tag: string): Promise<StartedVm> {
  const [vm] = await engine.fork(tag, 1);
  vms.push(vm!);
  return vm!;
}

const sh = async (vm: StartedVm, command: string): Promise<string> => {
  const r = await vm.exec(command);
  expect(r.stderr.toString()).toBe('');
  expect(r.exitCode).toBe(0);
  return r.stdout.toString();
};

/**
 * A writer that appends "<n> <random>" lines to /tmp/log every few ms. After a restore the guest's
 * RNG is reseeded, so a branch child's log and its source's log share exactly the lines written
 * before the pause, and differ after it.
 */
const LOGGER =
  'i=0; while :; do echo "$i $(head -c6 /dev/urandom | od -An -tx1 | tr -d " ")" >> /tmp/log; i=$((i+1)); usleep 5000; done';

async function lines(vm: StartedVm, file = '/tmp/log'): Promise<string[]> {
  return (await vm.readFile(file)).toString().trim().split('\n');
}

function commonPrefix(a: string[], b: string[]): number {
  let n = 0;
  while (n < a.length && n < b.length && a[n] === b[n]) n++;
  return n;
}

beforeAll(async () => {
  await engine.snapshot('root', { warmup: 'echo from-root > /tmp/state' });
});

afterEach(async () => {
  await Promise.all(vms.splice(0).map((vm) => vm.kill()));
});

afterAll(async () => {
  const roots = (await engine.snapshots.list()).filter((s) => !s.meta.parent);
  for (const s of roots) await engine.removeSnapshot(s.tag, { cascade: true });
  expect(home.entries('snapshots')).toEqual([]);
  expect(home.leftovers()).toEqual(NOTHING_LEFT);
  home.remove();
});

/*
 * The source is busy all through the copy: a logger forks processes every few ms. live and diff
 * copy while it runs (the pause is only the last round), full stops it for the whole copy.
 */
describe.each<BranchMode>(['full', 'live', 'diff'])('branch --mode %s of a busy source', (mode) => {
  test('children of the branch see the source exactly as it was at the pause; the source carries on', async () => {
    const source = await fork('root');
    await sh(source, 'dd if=/dev/urandom of=/tmp/blob bs=1M count=16 2>/dev/null && md5sum /tmp/blob > /tmp/blob.md5');
    await sh(source, `echo before > /tmp/state; (${LOGGER}) > /dev/null 2>&1 &`);
    await new Promise((resolve) => setTimeout(resolve, 300));
    const atCall = (await lines(source)).length;
    const r = await engine.branch(source, `b-${mode}`, mode);
    await sh(source, 'echo after > /tmp/state; dd if=/dev/zero of=/tmp/blob bs=1M count=16 2>/dev/null');
    const atReturn = (await lines(source)).length;
    expect(r).toMatchObject({
      tag: `b-${mode}`,
      mode,
      meta: { parent: mode === 'diff' ? 'root' : null, branch: { from: 'root', mode } },
    });
    expect(r.pauseMs).toBeGreaterThan(0);
    if (mode === 'diff') expect(r.bytesWritten).toBeLessThan(32 * 1024 * 1024);
    else expect(r.bytesWritten).toBeGreaterThan(16 * 1024 * 1024);
    if (mode !== 'full') expect(r.passes).toBeGreaterThan(1); // it copied while the source ran

    const child = await fork(`b-${mode}`);
    expect(await sh(child, 'cat /tmp/state')).toBe('before\n');
    expect(await sh(child, 'md5sum -c /tmp/blob.md5')).toBe('/tmp/blob: OK\n');
    // the logger runs on in the child from where it was paused: the two logs share the lines up to the pause
    const restoredLines = (await lines(child)).length;
    await vi.waitFor(async () => expect((await lines(child)).length).toBeGreaterThan(restoredLines + 2), {
      timeout: 20_000,
      interval: 200,
    });
    const [sourceLog, childLog] = [await lines(source), await lines(child)];
    const shared = commonPrefix(sourceLog, childLog);
    expect(shared).toBeGreaterThanOrEqual(atCall);
    expect(shared).toBeLessThanOrEqual(atReturn);
    expect(childLog.length).toBeGreaterThan(shared); // it did carry on, with lines of its own
    expect(await sh(child, 'echo child-runs > /tmp/state; cat /tmp/state')).toBe('child-runs\n');
    expect(await sh(source, 'cat /tmp/state')).toBe('after\n');
  });
});

describe('chains', () => {
  test("a diff link's children equal a full branch's children in the checked regions", async () => {
    const source = await fork('root');
    await sh(source, 'for i in 1 2 3; do dd if=/dev/urandom of=/tmp/r$i bs=1M count=4 2>/dev/null; done');
    const full = await engine.branch(source, 'same-full', 'full');
    const diff = await engine.branch(source, 'same-diff', 'diff');
    expect(diff.bytesWritten).toBeLessThan(full.bytesWritten);
    const sums = 'md5sum /tmp/r1 /tmp/r2 /tmp/r3 /tmp/state';
    const [a, b] = [await fork('same-full'), await fork('same-diff')];
    expect(await sh(a, sums)).toBe(await sh(b, sums));
    const d = await engine.describe('same-diff');
    expect(d).toMatchObject({ depth: 1, parent: 'root', ancestors: ['root'], dependents: [] });
    expect(d.physicalBytes).toBeLessThan(d.logicalBytes / 4);
    expect((await engine.describe('root')).dependents).toContain('same-diff');
  });

  test('5 consecutive diff branches of one source, and a chain 3 links deep, all restore their own state', async () => {
    const source = await fork('root');
    for (let i = 1; i <= 5; i++) {
      await sh(
        source,
        `echo step-${i} > /tmp/state; dd if=/dev/urandom of=/tmp/step bs=1M count=2 2>/dev/null; md5sum /tmp/step > /tmp/step.md5`,
      );
      await engine.branch(source, `step-${i}`, 'diff');
    }
    for (let i = 1; i <= 5; i++) {
      const child = await fork(`step-${i}`);
      expect(await sh(child, 'cat /tmp/state; md5sum -c /tmp/step.md5')).toBe(`step-${i}\n/tmp/step: OK\n`);
    }
    // a link of a link: fork from step-5, change something, diff again, twice
    let from = 'step-5';
    for (const next of ['deep-2', 'deep-3']) {
      const vm = await fork(from);
      await sh(vm, `echo ${next} >> /tmp/trail`);
      await engine.branch(vm, next, 'diff');
      from = next;
    }
    const d = await engine.describe('deep-3');
    expect(d).toMatchObject({ depth: 3, ancestors: ['deep-2', 'step-5', 'root'] });
    // drop the assembled caches: a fork rebuilds them from the chain
    for (const tag of ['deep-3', 'deep-2', 'step-5']) rmSync(join(home.root, 'snapshots', tag, 'memory.bin'));
    const deep = await fork('deep-3');
    expect(await sh(deep, 'cat /tmp/state /tmp/trail')).toBe('step-5\ndeep-2\ndeep-3\n');
  });

  test('rmi refuses a parent with dependents unless --cascade (the subtree) or --force', async () => {
    const source = await fork('root');
    await engine.branch(source, 'p', 'full');
    const child = await fork('p');
    await engine.branch(child, 'p-link', 'diff');
    await expect(engine.removeSnapshot('p')).rejects.toMatchObject({
      code: 'FORKD_ERR_CONFLICT',
      message: 'snapshot p has dependents: p-link',
      hint: expect.stringContaining('--cascade'),
    });
    expect(await engine.removeSnapshot('p', { cascade: true })).toEqual(['p-link', 'p']);
    expect((await engine.snapshots.list()).map((s) => s.tag)).not.toContain('p-link');
  });

  test('a link whose parent was removed, taken again or changed in place is refused with the reason', async () => {
    const source = await fork('root');
    await engine.branch(source, 'q', 'full');
    await engine.branch(await fork('q'), 'q-link', 'diff');
    await engine.removeSnapshot('q', { force: true });
    // the link still forks from its cache; without the cache it cannot be rebuilt
    await (await fork('q-link')).kill();
    rmSync(join(home.root, 'snapshots', 'q-link', 'memory.bin'));
    await expect(fork('q-link')).rejects.toMatchObject({
      code: 'FORKD_ERR_CORRUPT',
      message: 'snapshot q-link is a diff of q, which is gone',
    });
    await engine.branch(source, 'q', 'full'); // a new q under the same tag
    await expect(fork('q-link')).rejects.toMatchObject({
      code: 'FORKD_ERR_CORRUPT',
      message: 'snapshot q-link is a diff of q, but q has changed since',
    });
    await engine.removeSnapshot('q-link');

    // the same parent, its memory file changed in place under the link
    await engine.branch(await fork('q'), 'q-link', 'diff');
    rmSync(join(home.root, 'snapshots', 'q-link', 'memory.bin'));
    const parentMemory = join(home.root, 'snapshots', 'q', 'memory.bin');
    execFileSync('dd', ['if=/dev/urandom', `of=${parentMemory}`, 'bs=4096', 'count=1', 'seek=100', 'conv=notrunc']);
    const running = home.qemuProcesses().length;
    await expect(fork('q-link')).rejects.toMatchObject({
      code: 'FORKD_ERR_CORRUPT',
      message: 'snapshot q-link is a diff of q, whose content has changed since (sha256 differs)',
    });
    expect(home.qemuProcesses()).toHaveLength(running); // nothing started for the refused fork
    await engine.removeSnapshot('q-link');
  });

  test('compact flattens a link into a root that forks the same', async () => {
    const source = await fork('root');
    await sh(source, 'echo compacted > /tmp/state');
    await engine.branch(source, 'c-link', 'diff');
    const flat = await engine.compact('c-link', 'c-flat');
    expect(flat.meta).toMatchObject({ parent: null, depth: 0 });
    expect(await sh(await fork('c-flat'), 'cat /tmp/state')).toBe('compacted\n');
  });
});

describe('bad input', () => {
  test('unsafe tags, an existing tag and a bad mode are refused; the source is unharmed', async () => {
    const source = await fork('root');
    await expect(engine.branch(source, '../x', 'full')).rejects.toMatchObject({ code: 'FORKD_ERR_BAD_INPUT' });
    await expect(engine.branch(source, 'root', 'full')).rejects.toMatchObject({ code: 'FORKD_ERR_CONFLICT' });
    await expect(engine.branch(source, 'x', 'partial' as BranchMode)).rejects.toMatchObject({
      code: 'FORKD_ERR_BAD_INPUT',
    });
    const booted = await engine.boot();
    vms.push(booted);
    await expect(engine.branch(booted, 'x', 'full')).rejects.toMatchObject({ code: 'FORKD_ERR_BAD_INPUT' });
    expect(await sh(source, 'cat /tmp/state')).toBe('from-root\n');
    expect(home.entries('snapshots').filter((n) => n.startsWith('.'))).toEqual([]);
  });

  test('a source killed mid-branch leaves no snapshot and nothing running', async () => {
    const source = await fork('root');
    const branching = engine.branch(source, 'killed', 'full');
    await new Promise((resolve) => setTimeout(resolve, 150));
    await source.kill();
    await expect(branching).rejects.toBeTruthy();
    expect((await engine.snapshots.list()).map((s) => s.tag)).not.toContain('killed');
    expect(home.entries('snapshots').filter((n) => n.startsWith('.'))).toEqual([]);
    expect(home.qemuProcesses()).toHaveLength(0);
  });

  test('a live branch whose copy dies after the source resumed fails with the reason; nothing is listed or left', async () => {
    const source = await fork('root');
    await sh(source, 'echo kept > /tmp/state');
    const started = await engine.startBranch(source, 'lost-copy', 'live');
    await started.resumed;
    // the helper QEMU holding the copy (its RAM is the new snapshot's file, shared) dies before it saved the device state
    const helper = home.qemuProcesses().find((line) => line.includes('share=on'));
    expect(helper).toBeDefined();
    process.kill(Number.parseInt(helper!.trim(), 10), 'SIGKILL');
    await expect(started.done).rejects.toMatchObject({ code: expect.stringMatching(/^FORKD_ERR_/) });
    expect((await engine.snapshots.list()).map((s) => s.tag)).not.toContain('lost-copy');
    expect(home.entries('snapshots').filter((n) => n.startsWith('.'))).toEqual([]);
    expect(await sh(source, 'cat /tmp/state')).toBe('kept\n');
    expect(home.qemuProcesses()).toHaveLength(1); // the source alone
  });

  test('a disk that fills up mid-branch: the error comes back, the source runs on, no staging is left', async () => {
    // A tmpfs state dir with room for the root snapshot and about 48 MiB more. The root's memory
    // file is allocated up front: a child's read of a hole in a tmpfs file would allocate too.
    const small = join(home.root, 'small');
    mkdirSync(small);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=310m', 'tmpfs', small]);
    try {
      execFileSync('ln', ['-s', join(home.root, 'images'), join(small, 'images')]);
      // the KVM verdict, when this host needed a probe for one (a host without /dev/kvm does not)
      if (existsSync(join(home.root, 'accel.json'))) execFileSync('cp', [join(home.root, 'accel.json'), small]);
      await using tight = new Engine(new StatePaths(small));
      await tight.snapshot('root', { warmup: 'true' });
      execFileSync('fallocate', ['-l', '256M', join(small, 'snapshots', 'root', 'memory.bin')]);
      const [source] = await tight.fork('root', 1);
      try {
        await source!.exec('dd if=/dev/urandom of=/tmp/fill bs=1M count=64 2>/dev/null');
        const err: unknown = await tight.branch(source!, 'too-big', 'full').catch((e: unknown) => e);
        expect(err).toMatchObject({ code: expect.stringMatching(/^FORKD_ERR_/) });
        expect((await source!.exec('echo alive')).stdout.toString()).toBe('alive\n');
        expect(readdirSync(join(small, 'snapshots'))).toEqual(['root']);
      } finally {
        await source!.kill();
      }
      await tight.removeSnapshot('root');
    } finally {
      execFileSync('umount', [small]);
      rmSync(small, { recursive: true, force: true });
    }
    expect(existsSync(small)).toBe(false);
  });
});
