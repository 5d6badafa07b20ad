import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { Controller } from '../../src/client/controller.js';
import { AgentError } from '../../src/engine/agent/client.js';
import { Daemon } from '../../src/server/daemon.js';
import { contractController } from '../helpers/api-contract.js';
import { IsolatedHome, NOTHING_LEFT } from '../helpers/isolated-home.js';

const home = new IsolatedHome();
const TAG = 'limits';
let daemon: Daemon;
let client: Controller;

beforeAll(async () => {
  daemon = await Daemon.start({ paths: home.paths });
  client = contractController({ endpoint: daemon.endpoint, token: daemon.token });
  await client.createSnapshot(TAG);
});

afterAll(async () => {
  await client.close();
  await daemon.close();
  expect(home.leftovers()).toEqual(NOTHING_LEFT);
  home.remove();
});

describe('bounded file reads', () => {
  test('/dev/zero and files over max_bytes are refused with 413 FORKD_ERR_LIMIT; the daemon and the sandbox live on', async () => {
    const sandbox = await client.createSandbox(TAG);
    try {
      const big = randomBytes(5 * 1024 * 1024 + 7); // more than one 4 MiB chunk
      await sandbox.writeFile('/tmp/big', big);
      await sandbox.writeFile('/tmp/small', 'x'.repeat(1000));
      const rssBefore = process.memoryUsage().rss;

      const tooLong = { status: 413, code: 'FORKD_ERR_LIMIT', hint: expect.stringContaining('max_bytes') };
      await expect(sandbox.readFile('/dev/zero')).rejects.toMatchObject({
        ...tooLong,
        message: `/dev/zero is longer than the read limit of ${64 * 1024 * 1024} bytes`,
      });
      await expect(sandbox.readFile('/dev/zero', { maxBytes: 4096 })).rejects.toMatchObject(tooLong);
      await expect(sandbox.readFile('/tmp/small', { maxBytes: 999 })).rejects.toMatchObject(tooLong);
      await expect(sandbox.readFile('/tmp/big', { maxBytes: 4 * 1024 * 1024 + 100 })).rejects.toMatchObject(tooLong);

      expect((await sandbox.readFile('/tmp/small', { maxBytes: 1000 })).toString()).toBe('x'.repeat(1000));
      expect((await sandbox.readFile('/tmp/big', { maxBytes: big.length })).equals(big)).toBe(true);
      expect((await sandbox.readFile('/tmp/big')).equals(big)).toBe(true);
      expect(process.memoryUsage().rss - rssBefore).toBeLessThan(512 * 1024 * 1024);

      expect(await client.version()).toMatchObject({ api: 'v1' });
      expect((await sandbox.exec(['echo', 'alive'])).stdout.toString()).toBe('alive\n');
    } finally {
      await sandbox.kill();
    }
  });

  test('the agent itself refuses to read past max_bytes (E_TOO_LARGE), before reading a regular file', async () => {
    const sandbox = await client.createSandbox(TAG);
    try {
      const agent = daemon.ledger.sandbox(sandbox.id).vm.guest.client;
      const read = (path: string, offset: number, maxBytes: number) =>
        agent.request('read_file', { path, offset, length: 1 << 20, max_bytes: maxBytes }, 30_000);
      const refused = (path: string) =>
        expect.objectContaining({ agentCode: 'E_TOO_LARGE', message: expect.stringContaining(path) });
      await expect(read('/dev/zero', 0, 4096)).rejects.toEqual(refused('/dev/zero'));
      await expect(read('/dev/zero', 0, 4096)).rejects.toBeInstanceOf(AgentError);
      await expect(read('/proc/self/maps', 0, 0)).rejects.toEqual(refused('/proc/self/maps'));
      await sandbox.writeFile('/tmp/ten', '0123456789');
      await expect(read('/tmp/ten', 0, 9)).rejects.toEqual(refused('/tmp/ten'));
      await expect(read('/tmp/ten', 0, 10)).resolves.toMatchObject({
        eof: true,
        data: Buffer.from('0123456789').toString('base64'),
      });
      await expect(read('/tmp/ten', 4, 10)).resolves.toMatchObject({
        eof: true,
        data: Buffer.from('456789').toString('base64'),
      });
    } finally {
      await sandbox.kill();
    }
  });
});

describe('warm pools', () => {
  test('two pool changes at once leave one pool: QEMU processes match its size', async () => {
    const [first, second] = await Promise.all([client.setPool(TAG, 2), client.setPool(TAG, 1)]);
    expect([first.size, second.size]).toEqual([2, 1]);
    expect(home.qemuProcesses()).toHaveLength(1);
    expect((await client.snapshotInfo(TAG)).pool).toEqual({ size: 1, available: 1, failing: false, last_error: null });
    await client.setPool(TAG, 0);
    expect(home.qemuProcesses()).toEqual([]);
  });

  test('a pool whose spares keep failing is refused, and shows as failing in the details and /metrics', async () => {
    const metaFile = join(home.root, 'snapshots', TAG, 'meta.json');
    const meta = JSON.parse(readFileSync(metaFile, 'utf8')) as Record<string, unknown>;
    writeFileSync(metaFile, JSON.stringify({ ...meta, prime: 'echo no good >&2; exit 7' }));
    await expect(client.setPool(TAG, 2)).rejects.toMatchObject({
      status: 500,
      code: 'FORKD_ERR_SNAPSHOT',
      message: expect.stringMatching(
        /^the warm pool of limits gave up: its spares failed 3 times in a row \(0 of 2 ready\); the last: prime command of limits exited 7/,
      ),
    });
    expect((await client.snapshotInfo(TAG)).pool).toEqual({
      size: 2,
      available: 0,
      failing: true,
      last_error: 'prime command of limits exited 7: echo no good >&2; exit 7',
    });
    expect(await client.metrics()).toContain('\nforkd_pools_failing 1\n');
    expect(home.qemuProcesses()).toEqual([]);
    // each failed spare keeps its console log, as a failed start does; the pool stops after the third failure in a row
    const logs = home.entries('logs');
    expect(logs.length).toBeGreaterThanOrEqual(3);
    expect(logs.length).toBeLessThanOrEqual(4);
    for (const log of logs) rmSync(join(home.root, 'logs', log));

    await client.setPool(TAG, 0);
    expect((await client.snapshotInfo(TAG)).pool).toEqual({ size: 0, available: 0, failing: false, last_error: null });
    expect(await client.metrics()).toContain('\nforkd_pools_failing 0\n');
  });
});
