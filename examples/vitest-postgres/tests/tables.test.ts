import pg from 'pg';
import { expect } from 'vitest';
import { test } from 'forkd-action/vitest';

async function connect(url: string): Promise<pg.Client> {
  const client = new pg.Client(url);
  await client.connect();
  return client;
}

const tables = async (c: pg.Client) =>
  (await c.query("select tablename from pg_tables where schemaname = 'public' order by 1")).rows.map(
    (r) => r.tablename,
  );

for (let i = 1; i <= 5; i++) {
  test(`DDL and data in test ${i} stay in test ${i}`, async ({ postgres }) => {
    const c = await connect(postgres.url);
    expect(await tables(c)).toEqual([]); // nobody else's tables
    await c.query('create table users (id int primary key, name text)');
    await c.query(`insert into users select g, 'user-' || g from generate_series(1, ${i * 10}) g`);
    expect((await c.query('select count(*)::int as n from users')).rows[0].n).toBe(i * 10);
    expect(await tables(c)).toEqual(['users']);
    await c.end();
  });
}
