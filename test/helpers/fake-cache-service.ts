/**
 * The Actions cache service (the v1 REST protocol @actions/cache speaks when ACTIONS_CACHE_URL
 * is set), on loopback, so the Action's cache can be tested off GitHub. Entries live in memory.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

interface Entry {
  key: string;
  version: string;
  chunks: Array<{ start: number; data: Buffer }>;
  archive?: Buffer;
  /** Evicted: no longer found, and its key can be saved again. */
  dropped?: boolean;
}

const body = (req: IncomingMessage): Promise<Buffer> =>
  new Promise((resolve) => {
    const parts: Buffer[] = [];
    req.on('data', (c: Buffer) => parts.push(c));
    req.on('end', () => resolve(Buffer.concat(parts)));
  });

export class FakeCacheService {
  readonly entries: Entry[] = [];
  private readonly server: Server;
  private base = '';

  constructor() {
    this.server = createServer(async (req, res) => {
      const url = new URL(req.url ?? '/', this.base);
      const api = '/_apis/artifactcache/';
      if (req.method === 'GET' && url.pathname === `${api}cache`) {
        const keys = (url.searchParams.get('keys') ?? '').split(',');
        const version = url.searchParams.get('version');
        const hit = this.entries.find((e) => e.archive && !e.dropped && e.version === version && keys.includes(e.key));
        if (!hit) return void res.writeHead(204).end();
        const archiveLocation = `${this.base}archive/${this.entries.indexOf(hit)}`;
        return void res
          .writeHead(200, { 'content-type': 'application/json' })
          .end(JSON.stringify({ cacheKey: hit.key, archiveLocation }));
      }
      if (req.method === 'POST' && url.pathname === `${api}caches`) {
        const { key, version } = JSON.parse((await body(req)).toString()) as { key: string; version: string };
        if (this.entries.some((e) => !e.dropped && e.key === key && e.version === version)) {
          return void res.writeHead(409).end();
        }
        this.entries.push({ key, version, chunks: [] });
        return void res
          .writeHead(201, { 'content-type': 'application/json' })
          .end(JSON.stringify({ cacheId: this.entries.length })); // ids from 1: the client treats 0 as none
      }
      const id = /^\/_apis\/artifactcache\/caches\/(\d+)$/.exec(url.pathname)?.[1];
      const entry = id === undefined ? undefined : this.entries[Number(id) - 1];
      if (entry && req.method === 'PATCH') {
        const start = Number(/bytes (\d+)-/.exec(req.headers['content-range'] ?? '')?.[1] ?? 0);
        entry.chunks.push({ start, data: await body(req) });
        return void res.writeHead(204).end();
      }
      if (entry && req.method === 'POST') {
        await body(req);
        entry.archive = Buffer.concat(entry.chunks.sort((a, b) => a.start - b.start).map((c) => c.data));
        return void res.writeHead(204).end();
      }
      const archive = /^\/archive\/(\d+)$/.exec(url.pathname)?.[1];
      const stored = archive === undefined ? undefined : this.entries[Number(archive)]?.archive;
      if (req.method === 'GET' && stored) {
        return void res.writeHead(200, { 'content-length': stored.length }).end(stored);
      }
      res.writeHead(404).end();
    });
  }

  /** Evicts the entries whose key starts with `prefix`, as GitHub evicts old entries. */
  drop(prefix: string): void {
    for (const entry of this.entries) if (entry.key.startsWith(prefix)) entry.dropped = true;
  }

  /** Starts it; returns the ACTIONS_CACHE_URL (with its trailing slash). */
  async start(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.base = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/`;
    return this.base;
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
