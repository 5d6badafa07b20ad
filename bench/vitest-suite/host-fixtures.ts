/**
 * The baselines of bench/vitest-suite.ts: the subset of the `forkd-action/vitest` API the example
 * suite uses, served by the host's PostgreSQL instead of forked children. FORKD_BENCH_HOST picks how:
 *   template: one shared server, CREATE DATABASE ... TEMPLATE per test (seeds cloned the same way)
 *   initdb:   initdb + pg_ctl start per test (seeds re-run per test: a fresh server has none)
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, inject, onTestFinished, test as base } from 'vitest';
import type { PostgresConnection } from '../../runner-plugins/vitest/index.js';
import { HostCluster, freePort } from '../host-postgres.js';
import { TEMPLATE } from './host-global-setup.js';

declare module 'vitest' {
  export interface ProvidedContext {
    forkdBenchPort: number;
  }
}

/** The postgres fixture's connection, without the sandbox a host server does not have. */
export type HostPostgres = Omit<PostgresConnection, 'sandbox'>;

const initdbPerTest = process.env.FORKD_BENCH_HOST === 'initdb';

function connection(port: number, database: string): HostPostgres {
  const [user, password, host] = ['forkd', 'forkd', '127.0.0.1'];
  return { url: `postgres://${user}:${password}@${host}:${port}/${database}`, host, port, user, password, database };
}

/** The template baseline at its best: each worker keeps one admin connection to the shared server. */
let admin: Promise<pg.Client> | undefined;
function sharedAdmin(): Promise<pg.Client> {
  admin ??= (async () => {
    const client = new pg.Client({ ...connection(inject('forkdBenchPort'), 'postgres') });
    await client.connect();
    return client;
  })();
  return admin;
}

/** A database of its own for a test (cloned from `template`), and how to drop it. */
async function fresh(template = TEMPLATE): Promise<{ postgres: HostPostgres; release: () => Promise<void> }> {
  if (initdbPerTest) {
    const cluster = new HostCluster(await freePort()).init();
    // the same start as a forked child of the postgres recipe: a database named forkd
    const client = new pg.Client({ ...connection(cluster.port, 'postgres') });
    await client.connect();
    await client.query('create database forkd');
    await client.end();
    return { postgres: connection(cluster.port, 'forkd'), release: async () => cluster.remove() };
  }
  const client = await sharedAdmin();
  const name = `t_${randomBytes(6).toString('hex')}`;
  await client.query(`create database ${name} template ${template}`);
  return {
    postgres: connection(inject('forkdBenchPort'), name),
    release: async () => void (await client.query(`drop database ${name} with (force)`)),
  };
}

export function forkdTest(scope: 'test' | 'file' | 'worker' = 'test') {
  return base.extend<{ postgres: HostPostgres }>({
    postgres: [
      // eslint-disable-next-line no-empty-pattern -- Vitest requires the destructuring
      async ({}, use) => {
        const { postgres, release } = await fresh();
        try {
          await use(postgres);
        } finally {
          await release();
        }
      },
      { scope },
    ],
  });
}

export const test = forkdTest('test');

export function seededPostgres(setup: (postgres: HostPostgres) => Promise<void>): { fork(): Promise<HostPostgres> } {
  let seed: string | undefined;
  if (!initdbPerTest) {
    beforeAll(async () => {
      const { postgres } = await fresh();
      await setup(postgres);
      seed = postgres.database;
    });
    afterAll(async () => {
      if (seed) await (await sharedAdmin()).query(`drop database ${seed} with (force)`);
    });
  }
  return {
    async fork() {
      const { postgres, release } = await fresh(seed);
      onTestFinished(release);
      if (initdbPerTest) await setup(postgres);
      return postgres;
    },
  };
}
