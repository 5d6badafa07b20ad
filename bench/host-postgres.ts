/** The host's own PostgreSQL 15 (Debian's postgresql-15), the baseline the Postgres benches compare with. */
import { execFileSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { onProcessExit } from '../src/engine/reaper.js';

export const PG_BIN = '/usr/lib/postgresql/15/bin';

/** Exits with a hint when the host has no PostgreSQL 15 to compare with. */
export function requireHostPostgres(bench: string): void {
  if (existsSync(join(PG_BIN, 'initdb'))) return;
  console.error(`${bench} compares against the host's PostgreSQL 15: ${PG_BIN}/initdb is missing`);
  console.error('  hint: apt-get install postgresql-15');
  process.exit(1);
}

export function hostPostgresVersion(): string {
  return execFileSync(join(PG_BIN, 'postgres'), ['--version'], { encoding: 'utf8' }).trim();
}

/** Runs a host PostgreSQL tool as the postgres user (initdb and postgres refuse to run as root). */
function asPostgres(tool: string, args: string[]): void {
  execFileSync('runuser', ['-u', 'postgres', '--', join(PG_BIN, tool), ...args], { stdio: 'ignore' });
}

export async function firstQuery(port: number, database: string, user = 'forkd', password = 'forkd'): Promise<void> {
  const client = new pg.Client({ host: '127.0.0.1', port, user, password, database });
  await client.connect();
  await client.query('select 1');
  await client.end();
}

/** A host cluster in a scratch dir (superuser forkd, trust auth): initdb, then pg_ctl start on `port`. */
export class HostCluster {
  readonly dir = mkdtempSync(join(tmpdir(), 'forkd-bench-pg-'));
  private readonly unregister = onProcessExit(() => this.remove());

  constructor(readonly port: number) {
    chownSync(this.dir, Number(execFileSync('id', ['-u', 'postgres'])), Number(execFileSync('id', ['-g', 'postgres'])));
  }

  init(): this {
    asPostgres('initdb', ['--no-sync', '-D', join(this.dir, 'data'), '-U', 'forkd', '--auth=trust']);
    const options = `-p ${this.port} -k ${this.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off`;
    asPostgres('pg_ctl', ['-D', join(this.dir, 'data'), '-o', options, '-l', join(this.dir, 'log'), '-w', 'start']);
    return this;
  }

  remove(): void {
    try {
      asPostgres('pg_ctl', ['-D', join(this.dir, 'data'), '-m', 'immediate', 'stop']);
    } catch {
      // not running
    }
    rmSync(this.dir, { recursive: true, force: true });
    this.unregister();
  }
}

/** A TCP port nobody listens on right now (for a server about to start). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}
