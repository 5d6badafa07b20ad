import pg from 'pg';
import { expect } from 'vitest';
import { forkdTest } from 'forkd-action/vitest';

/** One Postgres for the whole file: the tests here share it, in order. */
const test = forkdTest('file');

test('the first test creates a table', async ({ postgres }) => {
  const c = new pg.Client(postgres.url);
  await c.connect();
  await c.query('create table shared_in_file (n int)');
  await c.query('insert into shared_in_file values (1)');
  await c.end();
});

test('the second test of the file sees it', async ({ postgres }) => {
  const c = new pg.Client(postgres.url);
  await c.connect();
  expect((await c.query('select count(*)::int as n from shared_in_file')).rows[0].n).toBe(1);
  await c.end();
});
