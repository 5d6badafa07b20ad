/** The shared host server of the template baseline (bench/vitest-suite.ts); initdb needs none. */
import pg from 'pg';
import { HostCluster, freePort } from '../host-postgres.js';

/** The empty database every test's database is cloned from. */
export const TEMPLATE = 'template_app';

export default async function setup(project: { provide(key: 'forkdBenchPort', port: number): void }) {
  if (process.env.FORKD_BENCH_HOST === 'initdb') return;
  const cluster = new HostCluster(await freePort()).init();
  const admin = new pg.Client({ host: '127.0.0.1', port: cluster.port, user: 'forkd', database: 'postgres' });
  await admin.connect();
  await admin.query(`create database ${TEMPLATE}`);
  await admin.end();
  project.provide('forkdBenchPort', cluster.port);
  return () => cluster.remove();
}
