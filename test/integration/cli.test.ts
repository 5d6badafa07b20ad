import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, describe, expect, test } from 'vitest';
import type { DemoReport } from '../../src/cli/demo.js';
import { IsolatedHome, NOTHING_LEFT } from '../helpers/isolated-home.js';

const home = new IsolatedHome();
const cli = join(import.meta.dirname, '../../bin/forkd.js');

function forkd(args: string[], env: Record<string, string> = {}) {
  return spawnSync(process.execPath, [cli, ...args], { env: home.env(env), encoding: 'utf8', timeout: 120_000 });
}

afterEach(() => {
  expect(home.qemuProcesses()).toEqual([]);
  expect(home.entries('run')).toEqual([]);
});

afterAll(() => {
  expect(home.entries('snapshots')).toEqual([]);
  expect(home.leftovers()).toEqual(NOTHING_LEFT);
  home.remove();
});

describe('forkd info, compact and rmi on a chain', () => {
  test('info shows the chain; rmi refuses a parent with dependents until --cascade', async () => {
    await home.engine.snapshot('cli-root', { warmup: 'echo root > /tmp/state' });
    const [child] = await home.engine.fork('cli-root', 1);
    try {
      await child!.exec('echo link > /tmp/state');
      await home.engine.branch(child!, 'cli-link', 'diff');
    } finally {
      await child!.kill();
    }
    const info = forkd(['info', 'cli-link', '--json']);
    expect(JSON.parse(info.stdout)).toMatchObject({
      tag: 'cli-link',
      depth: 1,
      parent: 'cli-root',
      ancestors: ['cli-root'],
      dependents: [],
      logicalBytes: 256 * 1024 * 1024,
    });
    expect(forkd(['info', 'cli-root']).stdout).toMatch(/dependents +cli-link\n/);
    expect(forkd(['compact', '--from', 'cli-link', '--to', 'cli-flat']).status).toBe(0);
    const refused = forkd(['rmi', 'cli-root']);
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(/snapshot cli-root has dependents: cli-link\n {2}hint: .*--cascade/);
    const removed = forkd(['rmi', '--cascade', 'cli-root', 'cli-flat']);
    expect(removed.stdout).toBe('removed cli-link\nremoved cli-root\nremoved cli-flat\n');
  });
});

describe('forkd run', () => {
  test('prints the guest kernel uname and exits 0', () => {
    const r = forkd(['run', '--', 'uname', '-a']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/^Linux forkd \d+\.\d+\.\d+ .* x86_64 GNU\/Linux\n$/);
    expect(r.status).toBe(0);
  });

  test("exits with the command's exit code", () => {
    const r = forkd(['run', '--', 'sh', '-c', 'echo out; echo err >&2; exit 3']);
    expect(r.status).toBe(3);
    expect(r.stdout).toBe('out\n');
    expect(r.stderr).toBe('err\n');
  });

  test('a command missing in the guest exits 127 with its message', () => {
    const r = forkd(['run', '--', 'no-such-tool']);
    expect(r.status).toBe(127);
    expect(r.stderr).toMatch(/no-such-tool: No such file or directory/);
  });

  test('--json reports exit code, output, accelerator and timings', () => {
    const r = forkd(['run', '--json', '--', 'echo', 'hi']);
    expect(r.status).toBe(0);
    const out = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(out).toMatchObject({ exitCode: 0, signal: null, timedOut: false, stdout: 'hi\n', stderr: '' });
    expect(out.accel).toMatch(/^(kvm|tcg)$/);
    expect(out.bootMs).toBeGreaterThan(0);
  });

  test('--timeout kills a command that runs too long', () => {
    const r = forkd(['run', '--timeout', '1', '--', 'sleep', '30']);
    expect(r.status).toBe(137);
    expect(r.stderr).toMatch(/timed out after 1s/);
  });

  test('an unknown kernel path fails with the path and a hint, leaving nothing', () => {
    const r = forkd(['run', '--', 'true'], { FORKD_KERNEL: '/no/such/bzImage' });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/FORKD_KERNEL \/no\/such\/bzImage does not exist/);
    expect(r.stderr).toMatch(/hint: /);
  });

  test('a missing QEMU fails with an install hint (and --json gives a JSON error)', () => {
    const r = forkd(['run', '--json', '--', 'true'], { FORKD_QEMU: '/no/such/qemu' });
    expect(r.status).toBe(1);
    expect(JSON.parse(r.stdout)).toMatchObject({
      code: 'FORKD_ERR_QEMU_MISSING',
      hint: expect.stringContaining('apt-get'),
    });
  });

  test('Ctrl-C (SIGINT) stops the VM and removes its files', async () => {
    const child = spawn(process.execPath, [cli, 'run', '--', 'sleep', '60'], { env: home.env(), stdio: 'ignore' });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    for (let i = 0; i < 600 && home.qemuProcesses().length === 0; i++) await sleep(50);
    expect(home.qemuProcesses()).toHaveLength(1);
    await sleep(2000); // let the guest boot and start the command
    child.kill('SIGINT');
    expect(await exited).toBe(130);
    for (let i = 0; i < 100 && home.qemuProcesses().length > 0; i++) await sleep(50);
  });

  test('a SIGKILLed forkd takes its QEMU with it; the next run sweeps its files', async () => {
    const child = spawn(process.execPath, [cli, 'run', '--', 'sleep', '60'], { env: home.env(), stdio: 'ignore' });
    const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
    for (let i = 0; i < 600 && home.qemuProcesses().length === 0; i++) await sleep(50);
    expect(home.qemuProcesses()).toHaveLength(1);
    child.kill('SIGKILL');
    await exited;
    for (let i = 0; i < 100 && home.qemuProcesses().length > 0; i++) await sleep(50);
    expect(home.qemuProcesses()).toEqual([]);
    expect(home.entries('run')).toHaveLength(1); // nobody was left to clean up...
    expect(forkd(['run', '--', 'true']).status).toBe(0);
    expect(home.entries('run')).toEqual([]); // ...until the next run swept it
    for (const log of home.entries('logs')) rmSync(join(home.root, 'logs', log));
  });
});

describe('forkd demo, snapshot, images, rmi', () => {
  test('demo --json forks children, reports timings and memory, and cleans up', () => {
    const r = forkd(['demo', '--n', '4', '--json']);
    expect(r.status).toBe(0);
    const report = JSON.parse(r.stdout) as DemoReport;
    expect(report).toMatchObject({ children_ok: 8, fork: { n: 4, pooled_n: 4 } });
    for (const ms of [
      report.boot_ms,
      report.snapshot_ms,
      report.fork.p50_ms,
      report.fork.total_ms,
      report.fork.pooled_p50_ms,
    ]) {
      expect(ms).toBeGreaterThan(0);
    }
    expect(report.memory.child_pss_mib_p50).toBeLessThan(report.memory.cold_boot_pss_mib);
    expect(JSON.parse(forkd(['images', '--json']).stdout)).toEqual([]);
  });

  test('snapshot, images and rmi manage snapshots by tag', () => {
    const snap = forkd(['snapshot', '--tag', 'cli-snap', '--warmup', 'echo ready > /tmp/ready', '--json']);
    expect(snap.status).toBe(0);
    expect(JSON.parse(snap.stdout)).toMatchObject({
      tag: 'cli-snap',
      meta: { warmup: 'echo ready > /tmp/ready', memoryMiB: 256 },
    });
    const list = JSON.parse(forkd(['images', '--json']).stdout) as Array<Record<string, unknown>>;
    expect(list).toEqual([expect.objectContaining({ tag: 'cli-snap', memoryMiB: 256, parent: null })]);
    expect(forkd(['images']).stdout).toMatch(/^TAG\s+MEMORY\s+DISK[\s\S]*cli-snap\s+256 MiB/);
    expect(forkd(['snapshot', '--tag', 'cli-snap']).stderr).toMatch(
      /already exists\n {2}hint: remove it first: forkd rmi cli-snap/,
    );
    const rmi = forkd(['rmi', 'cli-snap', 'never-was']);
    expect(rmi.status).toBe(1);
    expect(rmi.stdout).toBe('removed cli-snap\n');
    expect(rmi.stderr).toMatch(/no snapshot tagged never-was/);
    expect(JSON.parse(forkd(['images', '--json']).stdout)).toEqual([]);
  });

  test('a bad tag is refused before anything starts', () => {
    const r = forkd(['snapshot', '--tag', '../escape']);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/invalid snapshot tag "..\/escape"\n {2}hint: a tag is 1-64 characters/);
  });
});

describe('forkd serve', () => {
  test('serves the API, and SIGTERM stops it with every sandbox gone', async () => {
    const { Controller } = await import('../../src/client/controller.js');
    const child = spawn(process.execPath, [cli, 'serve'], { env: home.env(), stdio: ['ignore', 'ignore', 'pipe'] });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      const info = join(home.root, 'daemon.json');
      for (let i = 0; i < 200 && !existsSync(info); i++) await sleep(50);
      const { endpoint, token_file } = JSON.parse(readFileSync(info, 'utf8')) as {
        endpoint: string;
        token_file: string;
      };
      expect(endpoint).toBe(`unix:${join(home.root, 'forkd.sock')}`);
      expect(statSync(token_file).mode & 0o777).toBe(0o600);
      expect(statSync(endpoint.slice(5)).mode & 0o777).toBe(0o600);
      const client = new Controller({ endpoint, token: readFileSync(token_file, 'utf8').trim() });
      await client.createSnapshot('served');
      const [sb] = await client.createSandboxes('served', 1);
      expect((await sb!.exec(['echo', 'hi'])).stdout.toString()).toBe('hi\n');
      await client.close();

      // The sandbox verbs find the daemon through the state dir.
      const spawned = JSON.parse(forkd(['spawn', '--tag', 'served', '-n', '2', '--json']).stdout) as Array<{
        id: string;
      }>;
      expect(spawned).toHaveLength(2);
      expect(forkd(['ls']).stdout).toMatch(new RegExp(`^${spawned[0]!.id}\\s+served`, 'm'));
      const ran = forkd(['exec', spawned[0]!.id, '--', 'sh', '-c', 'echo out; exit 5']);
      expect([ran.status, ran.stdout]).toEqual([5, 'out\n']);
      expect(JSON.parse(forkd(['ping', spawned[1]!.id]).stdout)).toMatchObject({ pong: true });
      forkd(['exec', spawned[1]!.id, '--', 'sh', '-c', 'echo one > /dev/console; echo two > /dev/console']);
      expect(forkd(['logs', spawned[1]!.id, '-n', '2']).stdout).toBe('one\ntwo\n');
      expect(JSON.parse(forkd(['logs', spawned[1]!.id, '--lines', '1', '--json']).stdout)).toEqual({
        id: spawned[1]!.id,
        lines: 1,
        text: 'two',
      });
      const killed = forkd(['kill', '--tag', 'served']);
      expect(killed.stdout.trim().split('\n')).toHaveLength(3);
      expect(forkd(['kill', 'sb-000000000000']).stderr).toMatch(/no sandbox sb-000000000000/);
      expect(JSON.parse(forkd(['ls', '--json']).stdout)).toEqual([]);
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      expect(existsSync(info)).toBe(false);
      expect(existsSync(endpoint.slice(5))).toBe(false);
    } finally {
      // only does anything when an expectation above failed: SIGTERM takes the daemon's sandboxes with it
      if (child.exitCode === null && child.kill('SIGTERM')) await exited;
    }
    expect(forkd(['rmi', 'served']).status).toBe(0);
  });
});

/** A live process, not a zombie waiting for init to reap it (an adopted VM's parent is gone). */
function running(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

describe('forkd serve restarts', () => {
  /** Starts `forkd serve` in this home and returns a client once it answers. */
  async function serve() {
    const { Controller } = await import('../../src/client/controller.js');
    const info = join(home.root, 'daemon.json');
    rmSync(info, { force: true });
    const child = spawn(process.execPath, [cli, 'serve'], { env: home.env(), stdio: 'ignore' });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    for (let i = 0; i < 400 && !existsSync(info); i++) await sleep(50);
    const { endpoint, token_file } = JSON.parse(readFileSync(info, 'utf8')) as { endpoint: string; token_file: string };
    return { child, exited, client: new Controller({ endpoint, token: readFileSync(token_file, 'utf8').trim() }) };
  }

  test("a killed daemon's live sandboxes are adopted by the next one; dead ones are reaped", async () => {
    const first = await serve();
    let second: Awaited<ReturnType<typeof serve>> | undefined;
    try {
      await first.client.createSnapshot('adopt');
      const [keep, lose] = await first.client.createSandboxes('adopt', 2);
      await keep!.writeFile('/tmp/kept', 'state survives the daemon\n');
      await first.client.close();
      first.child.kill('SIGKILL');
      await first.exited;
      // The VMs outlive the daemon; one of them dies while no daemon is running.
      expect(running(keep!.info.pid)).toBe(true);
      process.kill(lose!.info.pid, 'SIGKILL');

      second = await serve();
      const list = await second.client.listSandboxes();
      expect(list.map((s) => s.id)).toEqual([keep!.id]);
      expect((await second.client.readFile(keep!.id, '/tmp/kept')).toString()).toBe('state survives the daemon\n');
      expect((await second.client.exec(keep!.id, ['echo', 'still here'])).stdout.toString()).toBe('still here\n');
      expect(home.entries('run')).toHaveLength(1);
      await second.client.close();
      second.child.kill('SIGTERM');
      expect(await second.exited).toBe(0);
      expect(running(keep!.info.pid)).toBe(false);
      expect(home.entries('ledger')).toEqual([]);
      expect(forkd(['rmi', 'adopt']).status).toBe(0);
    } finally {
      // only does anything when an expectation above failed: SIGTERM takes a daemon's sandboxes with it
      for (const daemon of [second, first]) {
        if (daemon && daemon.child.exitCode === null && daemon.child.kill('SIGTERM')) await daemon.exited;
      }
    }
  });
});

describe('forkd doctor', () => {
  test('--json reports the accelerator and why', () => {
    const r = forkd(['doctor', '--json']);
    const report = JSON.parse(r.stdout) as {
      accel: string;
      accelReason: string;
      ok: boolean;
      checks: Array<{ name: string; status: string }>;
    };
    const kvmUsable = existsSync('/dev/kvm') && !existsSync('/sys/module/kvm_pvm');
    if (!existsSync('/dev/kvm')) expect(report.accelReason).toMatch(/\/dev\/kvm does not exist/);
    else if (existsSync('/sys/module/kvm_pvm')) expect(report.accelReason).toMatch(/PVM/);
    expect(report.accel).toBe(kvmUsable ? 'kvm' : 'tcg');
    expect(report.checks.map((c) => c.name)).toEqual(
      expect.arrayContaining(['platform', 'qemu', '/dev/kvm', 'base image', 'accelerator', 'state dir']),
    );
    expect(report.checks.find((c) => c.name === 'base image')?.status).toBe('pass');
    expect(r.status).toBe(report.ok ? 0 : 1);
  });

  test('FORKD_ACCEL forces the accelerator', () => {
    const r = forkd(['doctor', '--json'], { FORKD_ACCEL: 'kvm' });
    expect(JSON.parse(r.stdout)).toMatchObject({ accel: 'kvm', accelReason: 'forced by FORKD_ACCEL=kvm' });
  });

  test('prints one line per check with a fix hint for problems', () => {
    const r = forkd(['doctor']);
    expect(r.stdout).toMatch(/^(PASS|WARN|FAIL|SKIP) {2}qemu/m);
    expect(r.stdout).toMatch(/pass=\d+ warn=\d+ fail=\d+ skip=\d+/);
  });
});

describe('bad input', () => {
  test('sandbox verbs without a daemon say how to start one', () => {
    const r = forkd(['ls']);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/no forkd daemon endpoint[\s\S]*hint: start one with `forkd serve`/);
  });

  test('an unknown build target is refused with a hint', () => {
    const r = forkd(['build', 'everything']);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(
      /no recipe everything \(no .*recipes\/everything\/recipe.json\)\n {2}hint: name one of .*postgres/,
    );
    expect(forkd(['build', 'Etc']).stderr).toMatch(/invalid recipe name "Etc"/);
    expect(forkd(['build', '../etc']).stderr).toMatch(/no recipe \.\.\/etc/);
  });

  test('a bad FORKD_ACCEL is refused', () => {
    const r = forkd(['run', '--', 'true'], { FORKD_ACCEL: 'warp' });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/FORKD_ACCEL=warp is not one of kvm, tcg, auto/);
  });
});
