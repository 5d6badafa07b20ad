import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, test, vi } from 'vitest';
import type { Controller } from '../../src/client/controller.js';
import { Daemon } from '../../src/server/daemon.js';
import { contractController } from '../helpers/api-contract.js';
import { IsolatedHome } from '../helpers/isolated-home.js';

const home = new IsolatedHome();
const root = join(import.meta.dirname, '../..');
const SNAPSHOT = 'guarded';
let daemon: Daemon;
let client: Controller;

beforeAll(async () => {
  daemon = await Daemon.start({ paths: home.paths });
  client = contractController({ endpoint: daemon.endpoint, token: daemon.token });
  await client.createSnapshot(SNAPSHOT);
}, 300_000);

afterAll(async () => {
  await client?.close();
  await daemon?.close();
  expect(home.qemuProcesses()).toEqual([]);
  expect(home.entries('run')).toEqual([]);
  expect(home.entries('ledger')).toEqual([]);
  expect(existsSync(join(home.root, 'daemon.lock'))).toBe(false);
  home.remove();
});

async function liveIds(): Promise<string[]> {
  return (await client.listSandboxes()).map((s) => s.id);
}

describe('one daemon per state dir', () => {
  test("a second daemon on the same state dir, on TCP or another socket, is refused naming the first; the first's sandboxes live on", async () => {
    await using sb = await client.createSandbox(SNAPSHOT);
    for (const listen of ['127.0.0.1:0', join(home.root, 'second.sock')]) {
      await expect(Daemon.start({ paths: home.paths, listen })).rejects.toMatchObject({
        code: 'FORKD_ERR_CONFLICT',
        message: `a daemon (pid ${process.pid}) already serves ${home.root}`,
        hint: expect.stringContaining(`it listens on ${daemon.endpoint}`),
      });
    }
    expect(await liveIds()).toEqual([sb.id]);
    expect((await sb.exec(['true'])).exitCode).toBe(0);
    expect(existsSync(join(home.root, 'second.sock'))).toBe(false);
  });

  test('the lock of a daemon killed with SIGKILL is taken over by the next one, and removed on close', async () => {
    const other = new IsolatedHome();
    const lock = join(other.root, 'daemon.lock');
    const serve = spawn(process.execPath, ['--import', 'tsx', join(root, 'src/cli/main.ts'), 'serve'], {
      cwd: root,
      env: other.env(),
      stdio: 'ignore',
    });
    const exited = new Promise((resolve) => serve.once('exit', resolve));
    try {
      const info = join(other.root, 'daemon.json');
      for (let i = 0; i < 1200 && !existsSync(info); i++) await sleep(50);
      const { endpoint } = JSON.parse(readFileSync(info, 'utf8')) as { endpoint: string };
      await expect(Daemon.start({ paths: other.paths, listen: '127.0.0.1:0' })).rejects.toMatchObject({
        code: 'FORKD_ERR_CONFLICT',
        message: `a daemon (pid ${serve.pid}) already serves ${other.root}`,
        hint: `it listens on ${endpoint}: use it, stop it first (kill ${serve.pid}), or give this one another FORKD_HOME`,
      });
    } finally {
      serve.kill('SIGKILL');
      await exited;
    }
    expect(existsSync(lock)).toBe(true); // left by the killed daemon
    const next = await Daemon.start({ paths: other.paths });
    expect(JSON.parse(readFileSync(lock, 'utf8'))).toMatchObject({ pid: process.pid });
    await next.close();
    expect(existsSync(lock)).toBe(false);
    other.remove();
  });
});

describe('leases and requests', () => {
  test('a request longer than the lease (ttl_s 2, exec of sleep 4) succeeds and the sandbox lives on', async () => {
    const sb = await client.createSandbox(SNAPSHOT, { ttlS: 2 });
    const result = await sb.exec(['sleep', '4']);
    expect(result.exitCode).toBe(0);
    expect(await liveIds()).toContain(sb.id); // the lease started over when the exec ended
    await sleep(1000);
    expect(await liveIds()).toContain(sb.id);
    for (let i = 0; i < 100 && (await liveIds()).includes(sb.id); i++) await sleep(100); // left alone, it is reaped
    expect(await liveIds()).not.toContain(sb.id);
  });

  test('a fork whose sandboxes cannot all be recorded (disk full) answers the error and leaves no VM running', async () => {
    const { ledger } = daemon;
    const addSandbox = ledger.addSandbox.bind(ledger);
    let calls = 0;
    const add = vi.spyOn(ledger, 'addSandbox').mockImplementation((...args) => {
      if (++calls === 2) throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
      return addSandbox(...args);
    });
    try {
      await expect(client.createSandboxes(SNAPSHOT, 3)).rejects.toMatchObject({
        status: 500,
        message: expect.stringContaining('ENOSPC'),
      });
    } finally {
      add.mockRestore();
    }
    expect(calls).toBe(2);
    expect(await client.listSandboxes()).toEqual([]);
    expect(home.qemuProcesses()).toEqual([]);
    expect(home.entries('ledger')).toEqual([]);
  });
});
