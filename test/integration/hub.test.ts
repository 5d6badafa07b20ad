import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { StatePaths } from '../../src/common/state-dir.js';
import { openEngine } from '../../src/hub/hub.js';
import { Daemon } from '../../src/server/daemon.js';
import type { StartedVm } from '../../src/engine/vmm/vm.js';
import type { PackManifest } from '../../src/hub/manifest.js';
import { unpack } from '../../src/hub/unpack.js';
import { checked, contractController } from '../helpers/api-contract.js';
import { IsolatedHome, NOTHING_LEFT } from '../helpers/isolated-home.js';

const home = new IsolatedHome();
const { engine, hub } = home;
const cli = join(import.meta.dirname, '../../bin/forkd.js');

/** What a child of the snapshot holds: a file, a 4 MiB blob's checksum, and a process started in the parent. */
const WARMUP =
  'echo packed > /tmp/state; dd if=/dev/urandom of=/tmp/blob bs=1M count=4 2>/dev/null; md5sum /tmp/blob > /tmp/blob.md5; (while :; do sleep 1; done) > /dev/null 2>&1 & echo $! > /tmp/sleeper';

async function childState(tag: string): Promise<string> {
  const [vm] = await engine.fork(tag, 1);
  try {
    const r = await (vm as StartedVm).exec(
      'cat /tmp/state; md5sum -c /tmp/blob.md5; kill -0 $(cat /tmp/sleeper) && echo sleeper-alive',
    );
    expect(r.exitCode).toBe(0);
    return r.stdout.toString();
  } finally {
    await vm!.kill();
  }
}

const tags = async () => (await engine.snapshots.list()).map((s) => s.tag).sort();

beforeAll(async () => {
  await engine.snapshot('hub-root', { warmup: WARMUP });
});

afterAll(async () => {
  for (const s of (await engine.snapshots.list()).filter((s) => !s.meta.parent)) {
    await engine.removeSnapshot(s.tag, { cascade: true });
  }
  expect(home.leftovers()).toEqual(NOTHING_LEFT);
  home.remove();
});

describe('forkd pack / unpack', () => {
  test('round trip: pack, rmi, unpack, fork gives the same files and memory-resident state', async () => {
    const before = await childState('hub-root');
    expect(before).toBe('packed\n/tmp/blob: OK\nsleeper-alive\n');
    const out = join(home.root, 'hub-root.forkd.tar.zst');
    const packed = await hub.pack('hub-root', out);
    expect(packed.manifest.chain.map((l) => l.tag)).toEqual(['hub-root']);
    expect(packed.manifest.images.map((i) => i.path.split('/')[2])).toEqual(['bzImage', 'initramfs.cpio']);
    const memory = packed.manifest.chain[0]!.files.find((f) => f.path === 'hub-root/memory.bin')!;
    expect(memory).toMatchObject({ size: 256 * 1024 * 1024, sparse: true });
    expect(packed.bytes).toBeLessThan(memory.size / 4); // zero runs are not stored

    // standard tools read it: every file's sha256 is the manifest's, and memory comes back sparse
    const plain = join(home.root, 'plain');
    mkdirSync(plain);
    execFileSync('sh', ['-c', `zstd -dcq '${out}' | tar -x -C '${plain}'`]);
    const manifest = JSON.parse(readFileSync(join(plain, 'manifest.json'), 'utf8')) as typeof packed.manifest;
    expect(manifest).toEqual(packed.manifest);
    for (const file of [...manifest.chain[0]!.files, ...manifest.images]) {
      const sum = execFileSync('sha256sum', [join(plain, file.path)], { encoding: 'utf8' }).split(' ')[0];
      expect(sum, file.path).toBe(file.sha256);
    }
    const extracted = statSync(join(plain, 'hub-root/memory.bin'));
    expect(extracted.blocks * 512).toBeLessThan(extracted.size / 4);

    await engine.removeSnapshot('hub-root');
    const unpacked = await hub.unpack(out);
    expect(unpacked.tags).toEqual(['hub-root']);
    expect(await childState('hub-root')).toBe(before);
  });

  test('a chain packs and unpacks as a chain', async () => {
    const [source] = await engine.fork('hub-root', 1);
    await source!.exec('echo linked > /tmp/state');
    await engine.branch(source!, 'hub-link', 'diff');
    await source!.kill();
    const out = join(home.root, 'hub-link.forkd.tar.zst');
    const packed = await hub.pack('hub-link', out);
    expect(packed.manifest.chain.map((l) => [l.tag, l.parent])).toEqual([
      ['hub-root', null],
      ['hub-link', 'hub-root'],
    ]);
    expect(packed.manifest.chain[1]!.files.map((f) => f.path)).toEqual([
      'hub-link/meta.json',
      'hub-link/vmstate',
      'hub-link/memory.diff',
    ]);
    await engine.removeSnapshot('hub-root', { cascade: true });
    expect(await tags()).toEqual([]);
    expect((await hub.unpack(out)).tags).toEqual(['hub-root', 'hub-link']);
    expect(await engine.describe('hub-link')).toMatchObject({ depth: 1, parent: 'hub-root' });
    expect(await childState('hub-link')).toBe('linked\n/tmp/blob: OK\nsleeper-alive\n');
    expect(await childState('hub-root')).toBe('packed\n/tmp/blob: OK\nsleeper-alive\n');

    await expect(hub.unpack(out, { tag: 'renamed' })).rejects.toMatchObject({
      code: 'FORKD_ERR_BAD_INPUT',
      message: expect.stringContaining('a chain of 2'),
    });
  });

  test('an existing tag is refused without --force and left as it was; --force replaces it; --tag installs a copy', async () => {
    const out = join(home.root, 'hub-root.forkd.tar.zst');
    const id = (await engine.snapshots.get('hub-root')).meta.id;
    await expect(hub.unpack(out)).rejects.toMatchObject({
      code: 'FORKD_ERR_CONFLICT',
      message: 'snapshot hub-root already exists',
    });
    expect((await engine.snapshots.get('hub-root')).meta.id).toBe(id);
    expect(home.entries('tmp')).toEqual([]);

    await engine.removeSnapshot('hub-link');
    expect((await hub.unpack(out, { force: true })).tags).toEqual(['hub-root']);
    expect(home.entries('snapshots').filter((n) => n.startsWith('.'))).toEqual([]);
    expect((await hub.unpack(out, { tag: 'hub-copy' })).tags).toEqual(['hub-copy']);
    expect(await childState('hub-copy')).toBe('packed\n/tmp/blob: OK\nsleeper-alive\n');
    await engine.removeSnapshot('hub-copy');
  });

  test('a disk that fills up during unpack: a clear error, no staging left, the installed version untouched', async () => {
    const small = join(home.root, 'small');
    mkdirSync(small);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=12m', 'tmpfs', small]);
    try {
      const paths = new StatePaths(small);
      const previous = join(paths.snapshots(), 'hub-root');
      mkdirSync(previous);
      writeFileSync(join(previous, 'marker'), 'the version installed before');
      const pack = join(home.root, 'hub-root.forkd.tar.zst');
      const { compat } = JSON.parse(
        execFileSync('sh', ['-c', `zstd -dcq '${pack}' | tar -xO manifest.json`], { encoding: 'utf8' }),
      ) as PackManifest;
      const facts = { accel: compat.accel as 'tcg' | 'kvm', qemuVersion: compat.qemuVersion }; // this host's, as it packed it
      const host = {
        known: () => Promise.resolve(facts),
        probe: () => Promise.resolve(facts),
        retake: () => Promise.reject(new Error('fits')),
      };
      const err: unknown = await unpack(pack, paths, host, { force: true }).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'FORKD_ERR_LIMIT', message: expect.stringContaining('filled up') });
      expect(readFileSync(join(previous, 'marker'), 'utf8')).toBe('the version installed before');
      expect(readdirSync(paths.snapshots())).toEqual(['hub-root']);
      expect(readdirSync(paths.tmp())).toEqual([]);
    } finally {
      execFileSync('umount', [small]);
    }
  });

  test("on a state dir that never built anything, the pack's own images serve: unpack and fork build nothing", async () => {
    const fresh = new StatePaths(mkdtempSync(join(tmpdir(), 'forkd-fresh-'))); // no images, no accelerator verdict
    const { engine: freshEngine, hub: freshHub } = openEngine(fresh);
    try {
      expect((await freshHub.unpack(join(home.root, 'hub-root.forkd.tar.zst'))).tags).toEqual(['hub-root']);
      const [vm] = await freshEngine.fork('hub-root', 1);
      try {
        expect((await vm!.exec('cat /tmp/state')).stdout.toString()).toBe('packed\n');
      } finally {
        await vm!.kill();
      }
      expect(readdirSync(join(fresh.root, 'images'))).toEqual(['hub']); // no kernel, agent or initramfs built
      expect(readdirSync(fresh.tmp())).toEqual([]);
      expect(readdirSync(fresh.run())).toEqual([]);
    } finally {
      await freshEngine.close();
      rmSync(fresh.root, { recursive: true, force: true });
    }
  });

  test('the CLI: pack and unpack with --json; a missing pack file is a clear error', () => {
    const out = join(home.root, 'cli.forkd.tar.zst');
    const run = (args: string[]) =>
      execFileSync(process.execPath, [cli, ...args], {
        env: home.env(),
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe'],
      });
    const packed = JSON.parse(run(['pack', '--tag', 'hub-root', '--out', out, '--json'])) as {
      file: string;
      bytes: number;
    };
    expect(packed).toMatchObject({
      file: out,
      bytes: statSync(out).size,
      sha256: createHash('sha256').update(readFileSync(out)).digest('hex'),
    });
    const unpacked = JSON.parse(run(['unpack', out, '--tag', 'hub-cli', '--json'])) as { tags: string[] };
    expect(unpacked.tags).toEqual(['hub-cli']);
    expect(run(['rmi', 'hub-cli'])).toBe('removed hub-cli\n');
    let failure = '';
    try {
      run(['unpack', join(home.root, 'nope.forkd.tar.zst')]);
    } catch (err) {
      failure = String((err as { stderr: string }).stderr);
    }
    expect(failure).toContain('nope.forkd.tar.zst');
  });
});

/** A Hub on loopback: registry.json, packs with Range support, a pack that drops its first connection, and PUT. */
class LocalHub {
  readonly requests: Array<{ method: string; url: string; range?: string }> = [];
  readonly uploads = new Map<string, Buffer>();
  private readonly server: Server;
  registry: unknown = {};
  private dropped = false;

  constructor(private readonly packs: Record<string, string>) {
    this.server = createServer((req, res) => this.serve(req, res));
  }

  async start(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private serve(req: IncomingMessage, res: ServerResponse): void {
    const url = req.url ?? '/';
    this.requests.push({ method: req.method ?? '', url, ...(req.headers.range ? { range: req.headers.range } : {}) });
    if (req.method === 'PUT' && url.startsWith('/forbidden/')) {
      req.resume();
      req.on('end', () => res.writeHead(403).end());
      return;
    }
    if (req.method === 'PUT') {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        this.uploads.set(url, Buffer.concat(chunks));
        res.writeHead(201).end();
      });
      return;
    }
    if (url === '/registry.json')
      return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(this.registry));
    const upload = this.uploads.get(url);
    const file = this.packs[url];
    const data = upload ?? (file ? readFileSync(file) : undefined);
    if (!data) return void res.writeHead(404).end();
    const from = Number(/^bytes=(\d+)-$/.exec(req.headers.range ?? '')?.[1] ?? 0);
    const body = data.subarray(from);
    res.writeHead(from ? 206 : 200, {
      'content-length': body.length,
      ...(from ? { 'content-range': `bytes ${from}-${data.length - 1}/${data.length}` } : {}),
    });
    if (url.startsWith('/flaky/') && !this.dropped) {
      this.dropped = true; // the first answer stops halfway: the client has to resume
      res.write(body.subarray(0, body.length >> 1), () => res.destroy());
      return;
    }
    res.end(body);
  }
}

describe('forkd pull / push', () => {
  const sha = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');
  let hub: LocalHub;
  let base = '';
  let pack = '';
  const savedHub = process.env.FORKD_HUB_URL;

  beforeAll(async () => {
    pack = join(home.root, 'pull-root.forkd.tar.zst');
    await home.hub.pack('hub-root', pack);
    const tampered = join(home.root, 'tampered.forkd.tar.zst');
    writeFileSync(tampered, Buffer.concat([readFileSync(pack).subarray(0, -10), Buffer.alloc(10, 0xff)]));
    hub = new LocalHub({
      '/packs/root.forkd.tar.zst': pack,
      '/flaky/root.forkd.tar.zst': pack,
      '/packs/tampered.forkd.tar.zst': tampered,
    });
    base = await hub.start();
    const entry = (url: string) => ({ url, sha256: sha(pack), size_bytes: statSync(pack).size });
    hub.registry = {
      schema_version: 1,
      packages: {
        'acme/root': {
          versions: {
            latest: entry('packs/root.forkd.tar.zst'),
            v1: entry('packs/root.forkd.tar.zst'),
            flaky: entry(`${base}/flaky/root.forkd.tar.zst`),
            tampered: entry('packs/tampered.forkd.tar.zst'),
          },
        },
      },
    };
    process.env.FORKD_HUB_URL = base;
  });

  afterAll(async () => {
    if (savedHub === undefined) delete process.env.FORKD_HUB_URL;
    else process.env.FORKD_HUB_URL = savedHub;
    await hub.close();
  });

  test('pull by name and version; a second pull of the same pack is served from what is installed', async () => {
    await engine.removeSnapshot('hub-root', { cascade: true });
    const first = await home.hub.pull('acme/root@v1');
    expect(first).toMatchObject({ ref: 'acme/root@v1', tags: ['hub-root'], cached: false });
    expect(await childState('hub-root')).toBe('packed\n/tmp/blob: OK\nsleeper-alive\n');
    const fetched = hub.requests.filter((r) => r.url.startsWith('/packs/')).length;
    expect(await home.hub.pull('acme/root@v1')).toMatchObject({ tags: ['hub-root'], cached: true });
    expect(hub.requests.filter((r) => r.url.startsWith('/packs/')).length).toBe(fetched); // not downloaded again
    expect(home.entries('tmp')).toEqual([]);
  });

  test('a download whose connection drops resumes with a Range request', async () => {
    const r = await home.hub.pull('acme/root@flaky', { tag: 'hub-flaky' });
    expect(r.tags).toEqual(['hub-flaky']);
    const flaky = hub.requests.filter((q) => q.url.startsWith('/flaky/'));
    expect(flaky).toHaveLength(2);
    expect(flaky[1]!.range).toMatch(/^bytes=\d+-$/);
    expect(await childState('hub-flaky')).toBe('packed\n/tmp/blob: OK\nsleeper-alive\n');
    await engine.removeSnapshot('hub-flaky');
  });

  test('a .partial left by an earlier run of another version is resumed, fails its sha256, and is fetched again whole', async () => {
    const downloads = join(home.root, 'hub', 'downloads');
    mkdirSync(downloads, { recursive: true });
    writeFileSync(join(downloads, 'acme_root_v1.forkd.tar.zst.partial'), randomBytes(4096));
    const before = hub.requests.length;
    expect((await home.hub.pull('acme/root@v1', { tag: 'hub-stale' })).tags).toEqual(['hub-stale']);
    const packRequests = hub.requests.slice(before).filter((r) => r.url === '/packs/root.forkd.tar.zst');
    expect(packRequests.map((r) => r.range)).toEqual(['bytes=4096-', undefined]);
    expect(readdirSync(downloads)).toEqual([]);
    await engine.removeSnapshot('hub-stale');
  });

  test('a tampered pack fails its sha256 and leaves nothing behind', async () => {
    await expect(home.hub.pull('acme/root@tampered', { tag: 'hub-tampered' })).rejects.toMatchObject({
      code: 'FORKD_ERR_CORRUPT',
      message: expect.stringContaining('does not match its sha256 in the registry'),
    });
    expect(await tags()).not.toContain('hub-tampered');
    expect(readdirSync(join(home.root, 'hub', 'downloads'))).toEqual([]);
  });

  test('unknown names and versions, bad references and an unreachable Hub are clear errors', async () => {
    await expect(home.hub.pull('acme/root@v9')).rejects.toMatchObject({
      code: 'FORKD_ERR_NOT_FOUND',
      hint: expect.stringContaining('latest, v1'),
    });
    await expect(home.hub.pull('../etc')).rejects.toMatchObject({ code: 'FORKD_ERR_BAD_INPUT' });
    process.env.FORKD_HUB_URL = 'http://127.0.0.1:1';
    try {
      await expect(home.hub.pull('acme/root')).rejects.toMatchObject({
        code: 'FORKD_ERR_UNREACHABLE',
        message: expect.stringContaining('http://127.0.0.1:1/registry.json'),
        hint: expect.stringContaining('FORKD_HUB_URL'),
      });
    } finally {
      process.env.FORKD_HUB_URL = base;
    }
  });

  test('the daemon pulls too (POST /v1/snapshots/pull): 201 with the tags, 400 without a ref, 404 for an unknown version', async () => {
    // the test Hub is plain http on loopback: a daemon pulls https:// only unless allowed
    await using daemon = await Daemon.start({ paths: home.paths, allowHttpPull: true });
    const client = contractController({ endpoint: daemon.endpoint, token: daemon.token });
    const checkedBefore = checked.replies;
    try {
      expect(await client.pull('acme/root', { tag: 'hub-daemon' })).toEqual({
        ref: 'acme/root@latest',
        tags: ['hub-daemon'],
        cached: false,
      });
      await using sandbox = await client.createSandbox('hub-daemon');
      expect((await sandbox.exec('cat /tmp/state')).stdout.toString()).toBe('packed\n');
      await expect(client.pull('')).rejects.toMatchObject({ status: 400 });
      await expect(client.pull('acme/root@v9')).rejects.toMatchObject({ status: 404, code: 'FORKD_ERR_NOT_FOUND' });
      expect(checked.replies - checkedBefore).toBeGreaterThanOrEqual(5); // the pull replies, 201 and errors, kept the schema
    } finally {
      await client.close();
    }
    await engine.removeSnapshot('hub-daemon');
  });

  test('push uploads the pack with a streamed PUT; pulling it back by URL works', async () => {
    const pushed = await home.hub.push('hub-root', `${base}/uploads/root.forkd.tar.zst`);
    const stored = hub.uploads.get('/uploads/root.forkd.tar.zst')!;
    expect(stored.length).toBe(pushed.bytes);
    expect(createHash('sha256').update(stored).digest('hex')).toBe(pushed.sha256);
    const back = await home.hub.pull(`${base}/uploads/root.forkd.tar.zst`, { tag: 'hub-pushed' });
    expect(back.tags).toEqual(['hub-pushed']);
    await engine.removeSnapshot('hub-pushed');
    expect(home.entries('tmp')).toEqual([]);

    // a server that refuses, and one that is not there: clear errors, and no temporary pack left
    await expect(home.hub.push('hub-root', `${base}/forbidden/root.forkd.tar.zst`)).rejects.toMatchObject({
      code: 'FORKD_ERR_UNREACHABLE',
      message: expect.stringContaining('answered 403'),
    });
    await expect(home.hub.push('hub-root', 'http://127.0.0.1:1/root.forkd.tar.zst')).rejects.toMatchObject({
      code: 'FORKD_ERR_UNREACHABLE',
      message: expect.stringContaining('cannot reach http://127.0.0.1:1/root.forkd.tar.zst'),
    });
    expect(home.entries('tmp')).toEqual([]);
  });
});
