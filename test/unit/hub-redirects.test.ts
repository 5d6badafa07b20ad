import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MockAgent } from 'undici';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { download, getFollowingRedirects } from '../../src/hub/download.js';

/**
 * The daemon pulls https:// only (unless --allow-http-pull); a redirect must not lead it to plain
 * http. The https:// first hop is undici's MockAgent (a real https server would need a certificate
 * this process trusts); every later hop is a real loopback http server, reached through the mock
 * agent's net connect, which counts what reaches it.
 */
let internal: Server;
let internalUrl: string;
let hits = 0;
const dir = mkdtempSync(join(tmpdir(), 'forkd-redirects-'));

beforeAll(async () => {
  internal = createServer((_req, res) => {
    hits++;
    res.end('internal secrets');
  });
  await new Promise<void>((resolve) => internal.listen(0, '127.0.0.1', resolve));
  internalUrl = `http://127.0.0.1:${(internal.address() as AddressInfo).port}/admin`;
});

afterAll(async () => {
  await new Promise((resolve) => internal.close(resolve));
  rmSync(dir, { recursive: true, force: true });
});

/** A mock agent where https://packs.example answers each path with `replies` (status, location). */
function packsHost(replies: Record<string, [number, string?]>): MockAgent {
  const agent = new MockAgent();
  agent.disableNetConnect();
  agent.enableNetConnect(/^127\.0\.0\.1:\d+$/);
  const host = agent.get('https://packs.example');
  for (const [path, [status, location]] of Object.entries(replies)) {
    host
      .intercept({ path, method: 'GET' })
      .reply(status, status === 200 ? 'pack bytes' : '', location ? { headers: { location } } : {})
      .persist();
  }
  return agent;
}

describe('redirects of a pull', () => {
  test('https only: a redirect to plain http is refused before it is fetched, with the hint', async () => {
    const dispatcher = packsHost({ '/p.forkd.tar.zst': [302, internalUrl] });
    await expect(
      getFollowingRedirects('https://packs.example/p.forkd.tar.zst', { dispatcher, httpsOnly: true }),
    ).rejects.toMatchObject({
      code: 'FORKD_ERR_BAD_INPUT',
      message: `refusing to pull ${internalUrl} (a redirect from https://packs.example/p.forkd.tar.zst): only https:// URLs are pulled`,
      hint: expect.stringContaining('--allow-http-pull'),
    });
    expect(hits).toBe(0);
    await dispatcher.close();
  });

  test('https only: https hops are followed (a relative Location too); the first hop is checked as well', async () => {
    const dispatcher = packsHost({ '/a': [301, '/b'], '/b': [307, 'https://packs.example/c'], '/c': [200] });
    const response = await getFollowingRedirects('https://packs.example/a', { dispatcher, httpsOnly: true });
    expect([response.statusCode, await response.body.text()]).toEqual([200, 'pack bytes']);
    await dispatcher.close();
    await expect(download(internalUrl, join(dir, 'first'), { httpsOnly: true })).rejects.toMatchObject({
      code: 'FORKD_ERR_BAD_INPUT',
      message: `refusing to pull ${internalUrl}: only https:// URLs are pulled`,
    });
    expect(hits).toBe(0);
  });

  test('without https only, the same redirect is followed (the CLI, a daemon with --allow-http-pull)', async () => {
    const dispatcher = packsHost({ '/p.forkd.tar.zst': [302, internalUrl] });
    const response = await getFollowingRedirects('https://packs.example/p.forkd.tar.zst', { dispatcher });
    expect(await response.body.text()).toBe('internal secrets');
    expect(hits).toBe(1);
    await dispatcher.close();
    await download(internalUrl, join(dir, 'plain'));
    expect(readFileSync(join(dir, 'plain'), 'utf8')).toBe('internal secrets');
  });

  test('a redirect loop ends after 5 hops', async () => {
    const dispatcher = packsHost({ '/loop': [302, '/loop'] });
    await expect(getFollowingRedirects('https://packs.example/loop', { dispatcher })).rejects.toMatchObject({
      code: 'FORKD_ERR_UNREACHABLE',
      message: 'https://packs.example/loop redirected more than 5 times',
    });
    await dispatcher.close();
  });
});
