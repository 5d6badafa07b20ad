import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { Controller } from '../../src/client/controller.js';
import { openEngine } from '../../src/hub/hub.js';
import { Daemon } from '../../src/server/daemon.js';
import { IsolatedHome, NOTHING_LEFT } from '../helpers/isolated-home.js';

const home = new IsolatedHome();
const TAG = 'closing';

/** Waits until a QEMU of this home runs: the request is under way. */
async function untilQemuRuns(): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (home.qemuProcesses().length === 0) {
    if (Date.now() > deadline) throw new Error('no QEMU started within 60 s');
    await sleep(10);
  }
}

/** No QEMU of this home, now and a while later (a request finishing late would start or keep one). */
async function expectNoQemu(): Promise<void> {
  expect(home.qemuProcesses()).toEqual([]);
  await sleep(3000);
  expect(home.qemuProcesses()).toEqual([]);
  expect(home.entries('ledger')).toEqual([]);
}

beforeAll(async () => {
  await home.engine.snapshot(TAG);
}, 300_000);

afterAll(async () => {
  const leaked = home.killLeakedQemu();
  await home.engine.removeSnapshot(TAG);
  await home.engine.close();
  expect(leaked).toEqual([]);
  expect(home.leftovers()).toEqual(NOTHING_LEFT);
  home.remove();
});

describe('closing while requests run', () => {
  test('a fork request under way when the daemon closes: its children are killed, no QEMU is left', async () => {
    const daemon = await Daemon.start({ paths: home.paths });
    const client = new Controller({ endpoint: daemon.endpoint, token: daemon.token });
    try {
      const forking = client.createSandboxes(TAG, 2);
      forking.catch(() => {});
      await untilQemuRuns();
      await daemon.close();
      await expect(forking).rejects.toThrow();
      await expectNoQemu();
    } finally {
      await client.close();
      await daemon.close();
    }
  });

  test("an engine's fork under way when it closes kills its children and throws FORKD_ERR_BUSY", async () => {
    const { engine } = openEngine(home.paths);
    const forking = engine.fork(TAG, 2);
    forking.catch(() => {});
    await untilQemuRuns();
    await engine.close();
    await expect(forking).rejects.toMatchObject({ code: 'FORKD_ERR_BUSY' });
    await expectNoQemu();
    await expect(engine.fork(TAG)).rejects.toMatchObject({ code: 'FORKD_ERR_BUSY' });
  });

  test('a warm-pool change under way when the engine closes makes no pool afterwards; later ones are refused', async () => {
    const { engine } = openEngine(home.paths);
    const pooling = engine.warmPool(TAG, 2);
    pooling.catch(() => {});
    await engine.close();
    await expect(pooling).rejects.toMatchObject({ code: 'FORKD_ERR_BUSY' });
    await expectNoQemu();
    await expect(engine.warmPool(TAG, 1)).rejects.toMatchObject({ code: 'FORKD_ERR_BUSY' });
    expect(engine.pooledChildren).toBe(0);
  });
});
