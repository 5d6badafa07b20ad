/**
 * The Action's main step with `snapshot: postgres`, run as a runner runs it (dist/action.mjs,
 * INPUT_*, the GITHUB_* files), against a loopback Actions cache, interleaved in one process:
 *   cached    the images and the postgres snapshot restored from the cache
 *   snapshot  the images restored, the snapshot taken afresh (its cache entry dropped first:
 *             what a run on another accelerator or QEMU gets)
 * Each main step is followed by its post step (not timed; it saves what missed). A first job fills
 * the cache. The kernel build and debootstrap of a first-ever run are not timed here (CI shows them).
 * The cached run's timeline (when each log group and Action line arrived) shows where its time goes.
 *   npm run bench:action
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { StatePaths } from '../src/common/state-dir.js';
import { ActionRunner, root, type Job, type StepResult } from '../test/helpers/action-runner.js';
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

interface TimedStep {
  mainMs: number;
  main: StepResult;
}

/** The lines that start or end a phase of the main step: log groups and the Action's own lines. */
const PHASE_MARK = /^(::group::|::endgroup::|::warning::|forkd: )/;

/** When each phase mark arrived, as the median over the runs (they print the same marks in order). */
function timeline(runs: TimedStep[]): string[] {
  const marks = runs.map(({ mainMs, main }) => [
    ...main.lines.filter((line) => PHASE_MARK.test(line.text)),
    { ms: mainMs, text: '(the step exits: the pool is full)' },
  ]);
  if (marks.some((m) => m.length !== marks[0]!.length)) throw new Error('the cached runs logged different phases');
  let previous = 0;
  return marks[0]!.map((mark, i) => {
    const at = median(marks.map((m) => m[i]!.ms));
    const line = `${(at / 1000).toFixed(1).padStart(6)} s  +${((at - previous) / 1000).toFixed(1).padStart(5)} s  ${mark.text.slice(0, 90)}`;
    previous = at;
    return line;
  });
}

async function step(job: Job, cacheUrl: string): Promise<TimedStep> {
  const env = { env: { ACTIONS_CACHE_URL: cacheUrl, ACTIONS_RUNTIME_TOKEN: 'bench' } };
  const started = performance.now();
  const main = await job.run('main', inputs, env);
  const mainMs = performance.now() - started;
  if (main.code !== 0) throw new Error(`main step failed:\n${main.log}`);
  const post = await job.run('post', {}, env);
  if (post.code !== 0) throw new Error(`post step failed:\n${post.log}`);
  if (job.leftovers().length) throw new Error(`left running: ${job.leftovers().join('\n')}`);
  return { mainMs, main };
}

const runner = new ActionRunner();
const cache = new FakeCacheService();
try {
  const cacheUrl = await cache.start();
  console.log(`machine: ${cpus().length} x ${cpus()[0]?.model}; Node ${process.version}`);
  const fill = runner.job('fill');
  seedPostgresImages(fill);
  const first = await step(fill, cacheUrl);
  console.log(
    `first job (images and the KVM verdict on disk: no restore, no probe; snapshot taken; both saved): main ${(first.mainMs / 1000).toFixed(1)} s`,
  );
  for (const e of cache.entries) console.log(`  cache entry ${e.key}: ${(e.archive!.length / 2 ** 20).toFixed(1)} MiB`);

  const times = { cached: [] as number[], snapshot: [] as number[] };
  const cachedRuns: TimedStep[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    const cached = await step(runner.job(`cached-${round}`), cacheUrl);
    if (!cached.main.log.includes('snapshots restored from the cache')) throw new Error('the cached run missed');
    times.cached.push(cached.mainMs);
    cachedRuns.push(cached);
    cache.drop('forkd-snapshots-');
    const fresh = await step(runner.job(`snapshot-${round}`), cacheUrl);
    if (!fresh.main.log.includes('::group::Snapshot postgres')) throw new Error('the snapshot run took no snapshot');
    times.snapshot.push(fresh.mainMs);
  }
  console.log(row('main step, all cached', times.cached));
  console.log(row('main step, snapshot taken afresh', times.snapshot));
  console.log(
    `a cached snapshot saves ${(median(times.snapshot) / median(times.cached)).toFixed(2)}x of the main step`,
  );
  console.log(`the cached main step, when each phase began or ended (median of ${ROUNDS}; +: since the line before):`);
  for (const line of timeline(cachedRuns)) console.log(line);
} finally {
  runner.dispose();
  await cache.close();
}
