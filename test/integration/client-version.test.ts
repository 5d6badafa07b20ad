import { afterAll, beforeAll, expect, test } from 'vitest';
import { packageVersion } from '../../src/common/package-root.js';
import { Daemon } from '../../src/server/daemon.js';
import { checked, contractController } from '../helpers/api-contract.js';
import { IsolatedHome } from '../helpers/isolated-home.js';

const home = new IsolatedHome();
let daemon: Daemon;

beforeAll(async () => {
  daemon = await Daemon.start({ paths: home.paths });
});

afterAll(async () => {
  expect(checked.replies).toBe(2); // both version replies kept the schema
  await daemon.close();
  home.remove();
});

test("a client of this package's version works with its engine", async () => {
  const client = contractController({ endpoint: daemon.endpoint, token: daemon.token });
  expect(client.clientVersion).toBe(packageVersion);
  await expect(client.ensureCompatible()).resolves.toBeUndefined();
  await client.close();
});

test('a client of another version is refused, naming both versions and how to fix it', async () => {
  const client = contractController({ endpoint: daemon.endpoint, token: daemon.token, clientVersion: '0.0.1-other' });
  try {
    await expect(client.ensureCompatible()).rejects.toMatchObject({
      code: 'FORKD_ERR_INCOMPATIBLE',
      message: `version mismatch: this client is forkd-action 0.0.1-other, the engine at ${daemon.endpoint} is forkd-action ${packageVersion}`,
      hint: expect.stringMatching(
        /^use the engine that ships with this package \(npx forkd serve; .*"version: 0\.0\.1-other"/,
      ),
    });
  } finally {
    await client.close();
  }
});
