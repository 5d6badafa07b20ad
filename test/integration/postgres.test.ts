import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import type { StartedVm } from '../../src/engine/vmm/vm.js';
import { IsolatedHome, NOTHING_LEFT } from '../helpers/isolated-home.js';

const home = new IsolatedHome();
const engine = home.engine;
const children: StartedVm[] = [];
const clients: pg.Client[] = [];

async function connect(vm: StartedVm, database = 'forkd'): Promise<pg.Client> {
  const client = new pg.Client({
    host: '127.0.0.1',
    port: vm.ports['5432'],
    user: 'forkd',
    password: 'forkd',
    database,
  });
  await client.connect();
  clients.push(client);
  return client;
}

async function fork(n: number): Promise<StartedVm[]> {
  const forked = await engine.fork('pg', n);
  children.push(...forked);
  return forked;
}

beforeAll(async () => {
  // The recipe's image is built once and cached (mmdebstrap, with initdb in a chroot of the tree).
  await engine.snapshot('pg', { recipe: 'postgres' });
}, 600_000);

afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.end().catch(() => {})));
  await Promise.all(children.splice(0).map((c) => c.kill()));
});

afterAll(async () => {
  await engine.snapshots.remove('pg');
  expect(home.leftovers()).toEqual(NOTHING_LEFT);
  home.remove();
});

describe('fork-per-test Postgres (recipes/postgres)', () => {
  test('every child is a ready server with the known user, database and password', async () => {
    const [a] = await fork(1);
    const c = await connect(a!);
    const r = await c.query('select current_user, current_database(), version()');
    expect(r.rows[0]).toMatchObject({
      current_user: 'forkd',
      current_database: 'forkd',
      version: expect.stringMatching(/^PostgreSQL 15\./),
    });
  });

  test('DDL, data, server settings and dropped databases stay in their own child', async () => {
    const [a, b] = await fork(2);
    const ca = await connect(a!);
    await ca.query('create table users (id int primary key, name text)');
    await ca.query("insert into users values (1, 'ada'), (2, 'grace')");
    await ca.query("alter system set work_mem = '7MB'");
    await ca.query('select pg_reload_conf()');
    const admin = await connect(a!, 'postgres');
    await admin.query('create database scratch');
    await admin.query('drop database scratch');

    const cb = await connect(b!);
    expect((await cb.query("select count(*)::int as n from pg_tables where tablename = 'users'")).rows[0].n).toBe(0);
    expect((await cb.query('show work_mem')).rows[0].work_mem).toBe('4MB');
    expect((await ca.query('select count(*)::int as n from users')).rows[0].n).toBe(2);

    const [later] = await fork(1);
    const cl = await connect(later!);
    expect((await cl.query("select count(*)::int as n from pg_tables where tablename = 'users'")).rows[0].n).toBe(0);
  });

  test('4 children at once each take 20 connections; a killed child frees its port', async () => {
    const four = await fork(4);
    expect(new Set(four.map((c) => c.ports['5432'])).size).toBe(4);
    await Promise.all(
      four.map(async (child, i) => {
        const conns = await Promise.all(Array.from({ length: 20 }, () => connect(child)));
        await conns[0]!.query(`create table mine_${i} (x int)`);
        const seen = await Promise.all(
          conns.map((c) => c.query("select count(*)::int as n from pg_tables where tablename like 'mine_%'")),
        );
        expect(seen.map((r) => r.rows[0].n)).toEqual(Array(20).fill(1));
      }),
    );
    const port = four[0]!.ports['5432']!;
    await Promise.all(clients.splice(0).map((c) => c.end()));
    await four[0]!.kill();
    const late = new pg.Client({
      host: '127.0.0.1',
      port,
      user: 'forkd',
      password: 'forkd',
      database: 'forkd',
      connectionTimeoutMillis: 2000,
    });
    await expect(late.connect()).rejects.toThrow();
  });

  test('the snapshot records the recipe and its port', async () => {
    const info = await engine.snapshots.get('pg');
    expect(info.meta).toMatchObject({ image: { name: 'postgres' }, ports: [5432], memoryMiB: 512 });
    expect(info.meta.image.rootfsHash).toBeTruthy();
  });
});
