import pg from 'pg';
import { describe, expect, test } from 'vitest';
import { seededPostgres } from 'forkd-action/vitest';

/** Migrations and seed data run once; every test forks from the checkpoint taken after them. */
const seeded = seededPostgres(async (postgres) => {
  const c = new pg.Client(postgres.url);
  await c.connect();
  await c.query('create table accounts (id int primary key, owner text not null, balance int not null)');
  await c.query("insert into accounts select g, 'owner-' || g, 100 from generate_series(1, 500) g");
  await c.end();
});

async function connect(): Promise<pg.Client> {
  const client = new pg.Client((await seeded.fork()).url);
  await client.connect();
  return client;
}

const total = async (c: pg.Client) => (await c.query('select sum(balance)::int as s from accounts')).rows[0].s;

describe('forked from a seeded checkpoint', () => {
  test('starts from the seed', async () => {
    const c = await connect();
    expect(await total(c)).toBe(50_000);
    await c.end();
  });

  test('a transfer changes only this test', async () => {
    const c = await connect();
    await c.query('update accounts set balance = balance - 50 where id = 1');
    await c.query('update accounts set balance = balance + 50 where id = 2');
    expect((await c.query('select balance from accounts where id = 2')).rows[0].balance).toBe(150);
    await c.end();
  });

  test('deleting everything changes only this test', async () => {
    const c = await connect();
    await c.query('delete from accounts');
    expect(await total(c)).toBe(null);
    await c.end();
  });

  test('dropping the table changes only this test', async () => {
    const c = await connect();
    await c.query('drop table accounts');
    expect((await c.query("select count(*)::int as n from pg_tables where tablename = 'accounts'")).rows[0].n).toBe(0);
    await c.end();
  });

  test('and the seed is whole again here', async () => {
    const c = await connect();
    expect(await total(c)).toBe(50_000);
    expect((await c.query('select balance from accounts where id = 1')).rows[0].balance).toBe(100);
    await c.end();
  });
});
