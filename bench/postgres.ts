/**
 * "A test wants a database" to "its first query is answered", side by side in one run:
 *   npm run bench:postgres [-- --runs 10]
 *   (a) fork the postgres recipe's snapshot (unpooled, and from a warm pool)
 *   (b) initdb + pg_ctl start on the host (Debian's PostgreSQL 15)
 *   (c) CREATE DATABASE ... TEMPLATE on one shared host server
 * plus 16 at once for (a) and (c). Host PostgreSQL: apt-get install postgresql-15.
 */
import { cpus } from 'node:os';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { Engine } from '../src/engine/engine.js';
import { findQemu } from '../src/engine/vmm/qemu-binary.js';
import { HostCluster, firstQuery, hostPostgresVersion, requireHostPostgres } from './host-postgres.js';
import { median, row } from './stats.js';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '10' } } });
const runs = Number(values.runs);
const tag = `bench-pg-${process.pid}`;
requireHostPostgres('bench:postgres');

async function time(fn: () => Promise<void>): Promise<number> {
  const started = performance.now();
  await fn();
  return performance.now() - started;
}

await using engine = new Engine();
const base = await engine.buildBase();
const verdict = await engine.accel(base);
const qemu = await findQemu();
console.log(`machine: ${cpus().length} x ${cpus()[0]?.model}; QEMU ${qemu.version}; accel ${verdict.accel}`);
console.log(`host PostgreSQL: ${hostPostgresVersion()}`);

const snap = await engine.snapshot(tag, { recipe: 'postgres' });
console.log(`postgres snapshot taken in ${(snap.timings.totalMs / 1000).toFixed(1)} s (not counted below)`);
const shared = new HostCluster(25432).init();
try {
  const forkOne = async (): Promise<void> => {
    const [child] = await engine.fork(tag, 1);
    try {
      await firstQuery(child!.ports['5432']!, 'forkd');
    } finally {
      await child!.kill();
    }
  };
  // warm up both sides once: file caches, the pg module, QEMU's first restore
  await forkOne();
  // (c) at its best: each test worker already holds an admin connection to the shared server
  const admins = await Promise.all(
    Array.from({ length: 16 }, async () => {
      const admin = new pg.Client({ host: '127.0.0.1', port: shared.port, user: 'forkd', database: 'postgres' });
      await admin.connect();
      return admin;
    }),
  );
  await admins[0]!.query('create database template_app');
  let dbs = 0;
  const fromTemplate = async (admin = admins[0]!): Promise<void> => {
    const name = `test_${dbs++}`;
    await admin.query(`create database ${name} template template_app`);
    await firstQuery(shared.port, name);
  };
  await fromTemplate();

  const forkMs: number[] = [];
  for (let i = 0; i < runs; i++) forkMs.push(await time(forkOne));

  await engine.warmPool(tag, 2);
  const pooledMs: number[] = [];
  for (let i = 0; i < runs; i++) {
    await engine.warmPool(tag, 2).then((pool) => pool?.filled());
    pooledMs.push(await time(forkOne));
  }
  await engine.warmPool(tag, 0);

  const initdbMs: number[] = [];
  for (let i = 0; i < Math.min(runs, 5); i++) {
    let cluster: HostCluster | undefined;
    initdbMs.push(
      await time(async () => {
        cluster = new HostCluster(25433).init();
        await firstQuery(cluster.port, 'postgres');
      }),
    );
    cluster?.remove();
  }

  const templateMs: number[] = [];
  for (let i = 0; i < runs; i++) templateMs.push(await time(() => fromTemplate()));

  const fork16 = await time(async () => {
    const children = await engine.fork(tag, 16);
    try {
      await Promise.all(children.map((c) => firstQuery(c.ports['5432']!, 'forkd')));
    } finally {
      await Promise.all(children.map((c) => c.kill()));
    }
  });
  const template16 = await time(async () => {
    await Promise.all(admins.map((admin) => fromTemplate(admin)));
  });
  await Promise.all(admins.map((admin) => admin.end()));

  console.log('\ntime from "a test wants a database" to "first query answered":');
  console.log(row('(a) fork postgres snapshot', forkMs));
  console.log(row('(a) fork, warm pool of 2', pooledMs));
  console.log(row('(b) host initdb + pg_ctl start', initdbMs));
  console.log(row('(c) host CREATE DATABASE ... TEMPLATE', templateMs));
  console.log(`${'16 at once: (a) fork 16'.padEnd(40)} ${fork16.toFixed(0)} ms wall`);
  console.log(`${'16 at once: (c) 16 template databases'.padEnd(40)} ${template16.toFixed(0)} ms wall`);
  const times = (slow: number[], fast: number[]) => (median(slow) / median(fast)).toFixed(1);
  console.log(
    `\nfork vs initdb: ${times(initdbMs, forkMs)}x faster unpooled, ${times(initdbMs, pooledMs)}x from the warm pool`,
  );
  console.log(
    `template vs fork: the template database is ${times(forkMs, templateMs)}x faster than an unpooled fork, ${times(pooledMs, templateMs)}x than a pooled one`,
  );
} finally {
  shared.remove();
  await engine.close();
  await engine.snapshots.remove(tag);
}
