import pg from 'pg';
import { expect } from 'vitest';
import { test } from 'forkd-action/vitest';

async function connect(url: string): Promise<pg.Client> {
  const client = new pg.Client(url);
  await client.connect();
  return client;
}

for (const mem of ['8MB', '16MB', '32MB']) {
  test(`ALTER SYSTEM work_mem = ${mem} is server-wide, and only this test's server`, async ({ postgres }) => {
    const c = await connect(postgres.url);
    expect((await c.query('show work_mem')).rows[0].work_mem).toBe('4MB');
    await c.query(`alter system set work_mem = '${mem}'`);
    await c.query('select pg_reload_conf()');
    const other = await connect(postgres.url); // a second session on the same server sees it
    await expect.poll(async () => (await other.query('show work_mem')).rows[0].work_mem).toBe(mem);
    await Promise.all([c.end(), other.end()]);
  });
}

test('roles are server-level state: CREATE ROLE stays in this test', async ({ postgres }) => {
  const c = await connect(postgres.url);
  expect((await c.query("select count(*)::int as n from pg_roles where rolname = 'reporter'")).rows[0].n).toBe(0);
  await c.query("create role reporter login password 'r'");
  const r = new pg.Client({ ...postgres, user: 'reporter', password: 'r' });
  await r.connect();
  expect((await r.query('select current_user')).rows[0].current_user).toBe('reporter');
  await Promise.all([c.end(), r.end()]);
});

test('and the next server has no such role', async ({ postgres }) => {
  const c = await connect(postgres.url);
  expect((await c.query("select count(*)::int as n from pg_roles where rolname = 'reporter'")).rows[0].n).toBe(0);
  await c.end();
});

test('the sandbox fixture runs commands next to the server', async ({ postgres }) => {
  const r = await postgres.sandbox.exec(['sh', '-c', 'su postgres -s /bin/sh -c \'psql -tAc "select 40 + 2" forkd\'']);
  expect(r.stdout.toString().trim()).toBe('42');
});
