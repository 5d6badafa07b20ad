/**
 * The Action's main step with `snapshot: postgres`, run as a runner runs it (dist/action.mjs,
 * INPUT_*, the GITHUB_* files), against a loopback Actions cache, interleaved in one process:
 *   cached    the images and the postgres snapshot restored from the cache
 *   snapshot  the images restored, the snapshot taken afresh (its cache entry dropped first:
 *             what a run on another accelerator or QEMU gets)
 * Each main step is followed by its post step (not timed; it saves what missed). A first job fills
 * the cache. The kernel build and debootstrap of a first-ever run are not timed here (CI shows them).
 *   npm run bench:action
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { StatePaths } from '../src/engine/state-dir.js';
import { ActionRunner, root, type Job } from '../test/helpers/action-runner.js';
import { FakeCacheService } from '../test/helpers/fake-cache-service.js';
import { median, row } from './stats.js';

const ROUNDS = 3;
const inputs = { snapshot: 'postgres', 'pool-size': '2' };

/** The shared cache's built guest and postgres image, copied (sparse) into a job's fresh home. */
function seedPostgresImages(job: Job): void {
  job.seedImages();
  const built = JSON.parse(
    execFileSync(process.execPath, [join(root, 'bin/forkd.js'), 'build', 'postgres', '--json'], { encoding: 'utf8' }),
  ) as { image: string };
  const shared = new StatePaths();
  const target = join(job.home, 'images', dirname(built.image).slice(shared.images('').length));
  mkdirSync(dirname(target), { recursive: true });
  execFileSync('cp', ['-r', '--sparse=always', dirname(built.image), target]);
}

async function step(job: Job, cacheUrl: string): Promise<{ mainMs: number; log: string }> {
  const env = { env: { ACTIONS_CACHE_URL: cacheUrl, ACTIONS_RUNTIME_TOKEN: 'bench' } };
  const started = performance.now();
  const main = await job.run('main', inputs, env);
  const mainMs = performance.now() - started;
  if (main.code !== 0) throw new Error(`main step failed:\n${main.log}`);
  const post = await job.run('post', {}, env);
  if (post.code !== 0) throw new Error(`post step failed:\n${post.log}`);
  if (job.leftovers().length) throw new Error(`left running: ${job.leftovers().join('\n')}`);
  return { mainMs, log: main.log };
}

const runner = new ActionRunner();
const cache = new FakeCacheService();
try {
  const cacheUrl = await cache.start();
  console.log(`machine: ${cpus().length} x ${cpus()[0]?.model}; Node ${process.version}`);
  const fill = runner.job('fill');
  seedPostgresImages(fill);
  const first = await step(fill, cacheUrl);
  console.log(`first job (images on disk, snapshot taken, both saved): main ${(first.mainMs / 1000).toFixed(1)} s`);
  for (const e of cache.entries) console.log(`  cache entry ${e.key}: ${(e.archive!.length / 2 ** 20).toFixed(1)} MiB`);

  const times = { cached: [] as number[], snapshot: [] as number[] };
  for (let round = 0; round < ROUNDS; round++) {
    const cached = await step(runner.job(`cached-${round}`), cacheUrl);
    if (!cached.log.includes('snapshots restored from the cache')) throw new Error('the cached run missed');
    times.cached.push(cached.mainMs);
    cache.drop('forkd-snapshots-');
    const fresh = await step(runner.job(`snapshot-${round}`), cacheUrl);
    if (!fresh.log.includes('::group::Snapshot postgres')) throw new Error('the snapshot run took no snapshot');
    times.snapshot.push(fresh.mainMs);
  }
  console.log(row('main step, all cached', times.cached));
  console.log(row('main step, snapshot taken afresh', times.snapshot));
  console.log(
    `a cached snapshot saves ${(median(times.snapshot) / median(times.cached)).toFixed(2)}x of the main step`,
  );
} finally {
  runner.dispose();
  await cache.close();
}
