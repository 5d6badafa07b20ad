import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { Controller } from '../../src/client/controller.js';
import { openEngine } from '../../src/hub/hub.js';
import type { VmRecord } from '../../src/server/ledger.js';
import { checked, contractController } from '../helpers/api-contract.js';
import { IsolatedHome } from '../helpers/isolated-home.js';

const home = new IsolatedHome();
const root = join(import.meta.dirname, '../..');
const SNAPSHOT = 'leased';

/** Every process this file starts: each must have exited by the end. */
const started: ChildProcess[] = [];

function start(args: string[], stdio: 'ignore' | 'pipe'): { child: ChildProcess; exited: Promise<void> } {
  const child = spawn(process.execPath, ['--import', 'tsx', ...args], {
    cwd: root,
    env: home.env(),
    stdio: ['ignore', stdio, 'pipe'],
  });
  started.push(child);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return { child, exited };
}

interface Served {
  child: ChildProcess;
  exited: Promise<void>;
  stderr: () => string;
  endpoint: string;
  token: string;
  client: Controller;
}

/** `forkd serve` from the sources, in its own process (so that it can be SIGKILLed), once it answers. */
async function serve(): Promise<Served> {
  const info = join(home.root, 'daemon.json');
  rmSync(info, { force: true }); // a killed daemon leaves its own
  const { child, exited } = start([join(root, 'src/cli/main.ts'), 'serve'], 'ignore');
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  const deadline = Date.now() + 120_000;
  while (!existsSync(info)) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`forkd serve did not start: ${stderr}`);
    await sleep(50);
  }
  const { endpoint, token_file } = JSON.parse(readFileSync(info, 'utf8')) as { endpoint: string; token_file: string };
  const token = readFileSync(token_file, 'utf8').trim();
  return { child, exited, stderr: () => stderr, endpoint, token, client: contractController({ endpoint, token }) };
}

/** A client process holding 4 sandboxes as `label`: with a lease it heartbeats, with `--pid` it names itself. */
async function holder(
  label: string,
  mode: string[],
): Promise<{ child: ChildProcess; exited: Promise<void>; ids: string[] }> {
  const { child, exited } = start(
    [join(root, 'test/helpers/lease-holder.ts'), daemon.endpoint, daemon.token, SNAPSHOT, '4', label, ...mode],
    'pipe',
  );
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  const line = await new Promise<string | undefined>((resolve) => {
    const lines = createInterface({ input: child.stdout! });
    lines.once('line', resolve);
    lines.once('close', () => resolve(undefined));
  });
  if (!line) throw new Error(`the holder exited: ${stderr}`);
  return { child, exited, ids: JSON.parse(line) as string[] };
}

/** Audit log lines about reaps and adoptions (not requests). */
function auditEvents(): Array<Record<string, unknown>> {
  return readFileSync(join(home.root, 'audit.log'), 'utf8')
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .filter((entry) => 'event' in entry);
}

/** Polls until `done()` holds; returns how long that took (ms), or throws after `timeoutMs`. */
async function within(timeoutMs: number, done: () => Promise<boolean>): Promise<number> {
  const started = performance.now();
  while (!(await done())) {
    if (performance.now() - started > timeoutMs) throw new Error(`not done within ${timeoutMs} ms`);
    await sleep(50);
  }
  return Math.round(performance.now() - started);
}

async function liveIds(): Promise<string[]> {
  return (await daemon.client.listSandboxes()).map((s) => s.id);
}

async function reapedTotal(reason: string): Promise<number> {
  const text = await daemon.client.metrics();
  return Number(new RegExp(`^forkd_sandboxes_reaped_total\\{reason="${reason}"\\} (\\d+)$`, 'm').exec(text)?.[1]);
}

function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

let daemon: Served;
/** Console logs the daemon keeps: those of VMs that died on their own. */
const crashedLogs: string[] = [];

beforeAll(async () => {
  daemon = await serve();
  await daemon.client.createSnapshot(SNAPSHOT);
}, 300_000);

afterAll(async () => {
  expect(checked.replies).toBeGreaterThan(50); // the replies above, restarted daemons' too, kept the schema
  await daemon?.client.close();
  daemon?.child.kill('SIGTERM');
  await daemon?.exited;
  for (const child of started) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  expect(started.filter((child) => child.exitCode === null && child.signalCode === null)).toEqual([]);
  expect(home.qemuProcesses()).toEqual([]);
  expect(home.entries('run')).toEqual([]);
  expect(home.entries('ledger')).toEqual([]);
  expect(home.entries('logs')).toEqual(crashedLogs);
  home.remove();
});

describe('bad input', () => {
  test('a lease of 0 or over a day, a dead owner pid, a bad label, an unknown owner: clear 4xx, nothing leaked', async () => {
    const { client } = daemon;
    const before = home.qemuProcesses().length;
    for (const ttlS of [0, 100_000]) {
      await expect(client.createSandboxes(SNAPSHOT, 1, { ttlS })).rejects.toMatchObject({
        status: 400,
        code: 'FORKD_ERR_BAD_INPUT',
        message: expect.stringContaining('ttl_s'),
      });
    }
    const pidMax = Number(readFileSync('/proc/sys/kernel/pid_max', 'utf8'));
    await expect(
      client.createSandboxes(SNAPSHOT, 1, { owner: { label: 'ghost', pid: pidMax + 1 } }),
    ).rejects.toMatchObject({
      status: 400,
      code: 'FORKD_ERR_BAD_INPUT',
      message: expect.stringContaining(`owner pid ${pidMax + 1} is not a running process`),
      hint: expect.stringContaining("on the daemon's host"),
    });
    await expect(client.createSandboxes(SNAPSHOT, 1, { owner: { label: '-nope' } })).rejects.toMatchObject({
      status: 400,
    });
    await expect(client.heartbeat('nobody')).rejects.toMatchObject({
      status: 404,
      code: 'FORKD_ERR_NOT_FOUND',
      hint: expect.stringContaining('fork with "owner"'),
    });
    await expect(client.heartbeat('bad label!')).rejects.toMatchObject({ status: 400 });
    expect(await client.deleteOwner('nobody')).toEqual({ owner: 'nobody', removed: [] });
    expect(await client.listSandboxes()).toEqual([]);
    expect(home.qemuProcesses()).toHaveLength(before);
  });
});

describe('reaping', () => {
  test('a QEMU killed with kill -9 leaves the sandbox list at once, the audit log saying so', async () => {
    const sb = await daemon.client.createSandbox(SNAPSHOT);
    const vm = (await readLedger()).find((r) => r.sandbox?.id === sb.id)!.vm;
    process.kill(sb.info.pid, 'SIGKILL');
    const ms = await within(1500, async () => !(await liveIds()).includes(sb.id));
    console.log(`kill -9 of a sandbox's QEMU: gone from GET /v1/sandboxes after ${ms} ms`);
    crashedLogs.push(`${vm}.log`); // its console log is kept: it died on its own
    expect(auditEvents().at(-1)).toMatchObject({ event: 'reap', id: sb.id, reason: 'qemu exited', exit: 'SIGKILL' });
    expect(await reapedTotal('exited')).toBe(1);
  });

  test('any request on a sandbox renews its lease; left alone, it is reaped', async () => {
    const sb = await daemon.client.createSandbox(SNAPSHOT, { ttlS: 2 });
    expect(sb.info).toMatchObject({ owner: null, lease: { ttl_s: 2 } });
    for (let i = 0; i < 6; i++) {
      await sleep(700);
      expect((await sb.exec(['true'])).exitCode).toBe(0);
    }
    const ms = await within(5000, async () => !(await liveIds()).includes(sb.id));
    expect(ms).toBeGreaterThan(1000);
    expect(auditEvents().at(-1)).toMatchObject({ event: 'reap', id: sb.id, reason: 'lease expired', ttl_s: 2 });
  });

  test('a client killed with SIGKILL while holding 4 sandboxes on a 5 s lease: all 4 reaped within 10 s', async () => {
    const held = await holder('lease-holder', ['--ttl', '5']);
    const infos = (await daemon.client.listSandboxes()).filter((s) => held.ids.includes(s.id));
    expect(infos).toHaveLength(4);
    for (const info of infos) expect(info).toMatchObject({ owner: { label: 'lease-holder' }, lease: { ttl_s: 5 } });
    await sleep(7000); // longer than the lease: the holder's heartbeats keep them
    expect(await liveIds()).toEqual(expect.arrayContaining(held.ids));

    held.child.kill('SIGKILL');
    await held.exited;
    // reaped: gone from the list and its QEMU gone (a SIGKILLed QEMU takes a moment to exit on a loaded host)
    const ms = await within(
      10_000,
      async () => !(await liveIds()).some((id) => held.ids.includes(id)) && infos.every((info) => !alive(info.pid)),
    );
    console.log(`SIGKILLed client, 5 s lease: its 4 sandboxes reaped ${ms} ms after its death`);
    const reaps = auditEvents().filter((e) => e.event === 'reap' && held.ids.includes(e.id as string));
    expect(reaps).toHaveLength(4);
    for (const reap of reaps) expect(reap).toMatchObject({ reason: 'lease expired', owner: 'lease-holder' });
    expect(await reapedTotal('lease')).toBe(5);
  });

  test('a client killed with SIGKILL while holding 4 sandboxes as an owner pid, no lease: all 4 reaped within 10 s', async () => {
    const held = await holder('pid-holder', ['--pid']);
    const infos = (await daemon.client.listSandboxes()).filter((s) => held.ids.includes(s.id));
    expect(infos).toHaveLength(4);
    const pid = held.child.pid!;
    for (const info of infos) expect(info).toMatchObject({ owner: { label: 'pid-holder', pid }, lease: null });

    held.child.kill('SIGKILL');
    await held.exited;
    // reaped: gone from the list and its QEMU gone (a SIGKILLed QEMU takes a moment to exit on a loaded host)
    const ms = await within(
      10_000,
      async () => !(await liveIds()).some((id) => held.ids.includes(id)) && infos.every((info) => !alive(info.pid)),
    );
    console.log(`SIGKILLed client, owner pid: its 4 sandboxes reaped ${ms} ms after its death`);
    const reaps = auditEvents().filter((e) => e.event === 'reap' && held.ids.includes(e.id as string));
    expect(reaps).toHaveLength(4);
    for (const reap of reaps) expect(reap).toMatchObject({ reason: `owner pid ${pid} exited`, owner: 'pid-holder' });
    expect(await reapedTotal('owner')).toBe(4);
  });

  test('an owner heartbeat renews all its leases; deleting the owner kills its sandboxes', async () => {
    const { client } = daemon;
    const leased = await client.createSandboxes(SNAPSHOT, 2, { owner: { label: 'suite-1' }, ttlS: 60 });
    const unleased = await client.createSandbox(SNAPSHOT, { owner: { label: 'suite-1' } });
    const other = await client.createSandbox(SNAPSHOT, { owner: { label: 'suite-2' } });
    expect(await client.heartbeat('suite-1')).toEqual({ owner: 'suite-1', sandboxes: 3, renewed: 2 });
    const removed = await client.deleteOwner('suite-1');
    expect(removed.removed.sort()).toEqual([...leased.map((s) => s.id), unleased.id].sort());
    expect(await liveIds()).toEqual([other.id]);
    await other.kill();
  });
});

describe("the engine's launch hook", () => {
  test('every QEMU of a pool, a fork and a branch is reported with its role and snapshot, and its end', async () => {
    const launched: Array<{ vm: string; role: string; snapshot: string | undefined }> = [];
    const ended: string[] = [];
    const { engine } = openEngine(home.paths, {
      launch: {
        ledger: {
          launched: (proc, role, snapshot) => launched.push({ vm: proc.id, role, snapshot }),
          ended: (proc) => ended.push(proc.id),
        },
      },
    });
    try {
      await engine.warmPool(SNAPSHOT, 1);
      const children = await engine.fork(SNAPSHOT, 2); // the spare, and one restored cold; the pool refills
      await engine.branch(children[0]!, 'hooked', 'full');
      await Promise.all(children.map((vm) => vm.kill()));
    } finally {
      await engine.close();
      await engine.removeSnapshot('hooked').catch(() => {});
    }
    expect(launched.map((l) => `${l.role} ${l.snapshot}`).sort()).toEqual([
      `branch-helper ${SNAPSHOT}`,
      `child ${SNAPSHOT}`,
      `spare ${SNAPSHOT}`,
      `spare ${SNAPSHOT}`,
    ]);
    expect(ended.sort()).toEqual(launched.map((l) => l.vm).sort());
  });
});

describe('snapshot parents', () => {
  test('a POST /v1/snapshots parent is in the ledger while it runs, and gone after', async () => {
    const creating = daemon.client.createSnapshot('parented');
    let parent: VmRecord | undefined;
    await within(120_000, async () => {
      parent = (await readLedger()).find((r) => r.role === 'parent');
      return parent !== undefined;
    });
    expect(parent).toMatchObject({ role: 'parent', snapshot: 'parented' });
    expect(home.qemuProcesses().filter((line) => line.includes(parent!.runDir))).toHaveLength(1);
    expect(await daemon.client.metrics()).toMatch(/^forkd_vms\{role="parent"\} 1$/m);
    await creating;
    expect((await readLedger()).filter((r) => r.role === 'parent')).toEqual([]);
    expect(home.qemuProcesses().filter((line) => line.includes(parent!.runDir))).toEqual([]);
    await daemon.client.deleteSnapshot('parented');
  });
});

async function readLedger(): Promise<VmRecord[]> {
  const dir = join(home.root, 'ledger');
  return readdirSync(dir).map((name) => JSON.parse(readFileSync(join(dir, name), 'utf8')) as VmRecord);
}

describe('daemon restarts', () => {
  test('a daemon SIGKILLed with a warm pool of 2 and 2 sandboxes: the next one adopts the sandboxes and reaps the spares', async () => {
    await daemon.client.setPool(SNAPSHOT, 2);
    const kept = await daemon.client.createSandboxes(SNAPSHOT, 2);
    await within(60_000, async () => /^forkd_vms\{role="spare"\} 2$/m.test(await daemon.client.metrics()));
    const records = await readLedger();
    expect(records.map((r) => r.role).sort()).toEqual(['sandbox', 'sandbox', 'spare', 'spare']);
    expect(home.qemuProcesses()).toHaveLength(4);

    await daemon.client.close();
    daemon.child.kill('SIGKILL');
    await daemon.exited;
    expect(home.qemuProcesses()).toHaveLength(4); // they outlive the daemon
    const eventsBefore = auditEvents().length;

    daemon = await serve();
    expect((await liveIds()).sort()).toEqual(kept.map((s) => s.id).sort());
    expect(home.qemuProcesses()).toHaveLength(2);
    const events = auditEvents().slice(eventsBefore);
    expect(events.filter((e) => e.event === 'adopt').map((e) => e.id)).toEqual(
      expect.arrayContaining(kept.map((s) => s.id)),
    );
    const spares = records.filter((r) => r.role === 'spare').map((r) => r.vm);
    expect(events.filter((e) => e.event === 'reap')).toEqual(
      spares.map((vm) => expect.objectContaining({ vm, role: 'spare', reason: 'spare of a previous daemon' })),
    );
    expect(events).toHaveLength(4);
    expect((await readLedger()).map((r) => r.role)).toEqual(['sandbox', 'sandbox']);
    for (const sb of kept) expect((await daemon.client.exec(sb.id, ['true'])).exitCode).toBe(0);
  });

  test('a sandbox that cannot be adopted is killed, and the daemon says which and why', async () => {
    const [broken, fine] = await daemon.client.listSandboxes();
    const record = (await readLedger()).find((r) => r.sandbox?.id === broken!.id)!;
    await daemon.client.close();
    daemon.child.kill('SIGKILL');
    await daemon.exited;
    rmSync(join(record.runDir, 'agent.sock')); // its agent can no longer be reached
    const eventsBefore = auditEvents().length;

    daemon = await serve();
    expect(await liveIds()).toEqual([fine!.id]);
    expect(alive(broken!.pid)).toBe(false);
    expect(daemon.stderr()).toContain(`could not adopt sandbox ${broken!.id} (${record.vm}`);
    expect(auditEvents().slice(eventsBefore)).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ event: 'adopt-failed', id: broken!.id, vm: record.vm, error: expect.any(String) }),
        expect.objectContaining({ event: 'adopt', id: fine!.id }),
      ]),
    );
    expect(home.qemuProcesses()).toHaveLength(1);
  });

  test('a snapshot parent dies with a SIGKILLed daemon, and the next daemon reaps its record', async () => {
    const creating = daemon.client.createSnapshot('orphaned', { warmup: 'sleep 600' }); // still warming up when killed
    creating.catch(() => {});
    let parent: VmRecord | undefined;
    await within(120_000, async () => {
      parent = (await readLedger()).find((r) => r.role === 'parent');
      return parent !== undefined;
    });
    daemon.child.kill('SIGKILL');
    await daemon.exited;
    await expect(creating).rejects.toThrow(); // the connection dropped
    await daemon.client.close();
    await within(5000, async () => !home.qemuProcesses().some((line) => line.includes(parent!.runDir)));
    const eventsBefore = auditEvents().length;

    daemon = await serve();
    expect(auditEvents().slice(eventsBefore)).toContainEqual(
      expect.objectContaining({
        event: 'reap',
        vm: parent!.vm,
        role: 'parent',
        reason: 'qemu exited while no daemon ran',
      }),
    );
    expect((await readLedger()).filter((r) => r.role === 'parent')).toEqual([]);
    expect(existsSync(parent!.runDir)).toBe(false);
  });
});
