import pg from 'pg';
import { expect } from 'vitest';
import { test } from 'forkd-action/vitest';

async function connect(url: string, database?: string): Promise<pg.Client> {
  const client = new pg.Client(database ? url.replace(/\/forkd$/, `/${database}`) : url);
  await client.connect();
  return client;
}

const databases = async (c: pg.Client) =>
  (await c.query('select datname from pg_database where not datistemplate order by 1')).rows.map((r) => r.datname);

test('DROP DATABASE of the main database, in this test only', async ({ postgres }) => {
  const admin = await connect(postgres.url, 'postgres');
  await admin.query('drop database forkd with (force)');
  expect(await databases(admin)).toEqual(['postgres']);
  await admin.end();
});

test('the next test has the main database again', async ({ postgres }) => {
  const admin = await connect(postgres.url, 'postgres');
  expect(await databases(admin)).toEqual(['forkd', 'postgres']);
  await admin.end();
});

for (const name of ['alpha', 'beta', 'gamma']) {
  test(`CREATE DATABASE ${name} and fill it; no other test sees it`, async ({ postgres }) => {
    const admin = await connect(postgres.url, 'postgres');
    expect(await databases(admin)).toEqual(['forkd', 'postgres']);
    await admin.query(`create database ${name}`);
    await admin.end();
    const c = await connect(postgres.url, name);
    await c.query('create table t as select generate_series(1, 1000) as n');
    expect((await c.query('select sum(n)::int as s from t')).rows[0].s).toBe(500500);
    await c.end();
  });
}
