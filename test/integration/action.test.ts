import { execFileSync } from 'node:child_process';
import { cpSync, createReadStream, existsSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { Controller } from '../../src/client/controller.js';
import { packageVersion } from '../../src/common/package-root.js';
import { ActionRunner, root, until, withoutKvm, type Job, type RunningStep } from '../helpers/action-runner.js';
import { FakeCacheService } from '../helpers/fake-cache-service.js';

const cache = new FakeCacheService();
let cacheUrl = '';

beforeAll(async () => {
  cacheUrl = await cache.start();
});

const runner = new ActionRunner();

/** A job whose main step is in a snapshot's warm-up (`sleep 600`), with its VM running. */
async function mainInWarmup(name: string): Promise<{ job: Job; step: RunningStep }> {
  const job = runner.job(name);
  job.seedImages();
  const recipe = job.writeRecipe('slow', 'sleep 600');
  const step = job.start('main', { snapshot: recipe, cache: 'false' }, { cwd: job.dir });
  await until(
    'the warm-up to run in a VM',
    () => step.log().includes('snapshot: warm-up sleep 600') && job.leftovers().some((c) => c.includes('qemu-system')),
    120_000,
  );
  return { job, step };
}

/** The post step: it succeeds, and nothing of the job runs after it. */
async function teardown(job: Job, env: Record<string, string> = {}): Promise<string> {
  const post = await job.run('post', {}, { env });
  expect(post.code, post.log).toBe(0);
  expect(job.leftovers()).toEqual([]);
  return post.log;
}
const work = runner.work;

afterAll(async () => {
  runner.dispose();
  await cache.close();
});

describe('the Action, run as the runner runs it', () => {
  test('setup leaves an engine later steps fork from; teardown stops everything and writes the summary', async () => {
    const job = runner.job('first');
    job.seedImages();
    const cacheEnv = { ACTIONS_CACHE_URL: cacheUrl, ACTIONS_RUNTIME_TOKEN: 'test-token' };
    const main = await job.run('main', { snapshot: 'base', 'pool-size': '1' }, { env: cacheEnv });
    expect(main.code, main.log).toBe(0);
    expect(main.log).toContain('no cached images for forkd-images-');
    expect(main.log).toContain('no cached snapshots for forkd-snapshots-tcg-');
    expect(job.outputs).toMatchObject({ 'snapshot-tag': 'base', accel: 'tcg' });
    expect(job.outputs.endpoint).toBe(`unix:${join(job.home, 'forkd.sock')}`);
    expect(main.log).toContain(`::add-mask::${job.env.FORKD_TOKEN}`);

    // a later step: its own process, reaching the engine through the exported variables
    const client = new Controller({ endpoint: job.env.FORKD_ENDPOINT!, token: job.env.FORKD_TOKEN! });
    for (let i = 0; i < 3; i++) {
      await using child = await client.createSandbox('base');
      expect((await child.exec(['echo', 'from-a-later-step'])).stdout.toString()).toBe('from-a-later-step\n');
    }
    await client.close();

    const post = await teardown(job, cacheEnv);
    expect(post).toContain('images saved to the cache');
    expect(post).toContain('snapshots saved to the cache');
    expect(job.summary).toContain('<th>accelerator</th><th>snapshot</th><th>forks served</th>');
    expect(job.summary).toMatch(
      /<td>tcg<\/td><td>base<\/td><td>3<\/td><td>[\d.]+ ms<\/td><td>[\d.]+ ms<\/td><td>\d+<\/td>/,
    );
    expect(cache.entries.filter((e) => e.archive)).toHaveLength(2);
  }, 300_000);

  test('a second run restores the images and the snapshot from the cache instead of making them', async () => {
    const job = runner.job('second'); // an empty state dir: only the cache can make this fast
    const cacheEnv = { ACTIONS_CACHE_URL: cacheUrl, ACTIONS_RUNTIME_TOKEN: 'test-token' };
    const main = await job.run('main', { snapshot: 'base', 'pool-size': '0' }, { env: cacheEnv });
    expect(main.code, main.log).toBe(0);
    expect(main.log).toContain('images restored from the cache');
    expect(main.log).not.toContain('kernel: compile');
    expect(main.log).toContain('snapshots restored from the cache');
    expect(main.log).toContain('forkd: snapshot base is already there');
    expect(main.log).not.toContain('::group::Snapshot base');
    const client = new Controller({ endpoint: job.env.FORKD_ENDPOINT!, token: job.env.FORKD_TOKEN! });
    {
      await using child = await client.createSandbox('base'); // the restored snapshot forks
      expect((await child.exec(['cat', '/proc/uptime'])).exitCode).toBe(0);
    }
    await client.close();
    expect(await teardown(job, cacheEnv)).not.toContain('saved to the cache'); // a hit needs no save
  }, 600_000);

  test('an unknown recipe fails the step with the reason; teardown still runs and finds nothing to stop', async () => {
    const job = runner.job('unknown');
    job.seedImages();
    const main = await job.run('main', { snapshot: 'no-such-recipe', cache: 'false' });
    expect(main.code).toBe(1);
    expect(main.log).toMatch(/::error::forkd build no-such-recipe failed \(exit 1\):%0A.*no-such-recipe/);
    const recipes = readdirSync(join(root, 'recipes'), { withFileTypes: true }).filter((e) => e.isDirectory());
    expect(main.log).toContain(`hint: name one of ${recipes.map((e) => e.name).join(', ')}, or give the path`);
    expect(main.log).not.toContain('::group::Building the guest kernel'); // refused before anything is built
    expect(await teardown(job)).toContain('the main step did not get as far as starting the engine');
  }, 300_000);

  test("a build failure fails the step with the command's error and the guest console tail", async () => {
    const job = runner.job('broken');
    job.seedImages();
    const recipe = job.writeRecipe(
      'broken',
      'echo console-marker-7e1 > /dev/console; echo broken-on-purpose >&2; exit 3',
    );
    const main = await job.run('main', { snapshot: recipe, cache: 'false' }, { cwd: job.dir });
    expect(main.code).toBe(1);
    const annotation = main.log.split('\n').find((line) => line.startsWith('::error::'));
    expect(annotation).toContain(`forkd snapshot --tag broken --recipe ${recipe} failed (exit 1)`);
    expect(annotation).toContain('step warm-up failed: exited 3');
    expect(annotation).toContain('broken-on-purpose'); // the warm-up's stderr
    expect(annotation).toContain('%0Aconsole-marker-7e1%0A'); // the guest console tail
    expect(annotation).toContain('hint: the warm-up must exit 0');
    await teardown(job);
  }, 300_000);

  test('no /dev/kvm: accel: kvm fails naming why; auto runs under TCG with a warning annotation', async () => {
    const strict = runner.job('no-kvm-strict');
    strict.seedImages();
    const failed = await strict.run('main', { accel: 'kvm', cache: 'false' }, { wrap: withoutKvm });
    expect(failed.code).toBe(1);
    expect(failed.log).toContain(
      '::error::accel: kvm was asked for, but KVM is not usable here: /dev/kvm does not exist',
    );
    await teardown(strict);

    const auto = runner.job('no-kvm-auto');
    auto.seedImages();
    const main = await auto.run('main', { 'pool-size': '0', cache: 'false' }, { wrap: withoutKvm });
    expect(main.code, main.log).toBe(0);
    expect(main.log).toContain('::warning::KVM is not usable here (/dev/kvm does not exist');
    expect(auto.outputs.accel).toBe('tcg');
    expect(auto.env.FORKD_ACCEL).toBe('tcg');
    await teardown(auto);
  }, 300_000);

  test("a cancelled job: the step stops its commands and their VMs within the runner's grace period", async () => {
    const { job, step } = await mainInWarmup('cancelled');
    process.kill(step.pid, 'SIGINT'); // a cancel: the runner signals the step, then SIGTERM after 7.5 s
    const signalled = Date.now();
    const main = await step.done;
    expect(Date.now() - signalled).toBeLessThan(7_500);
    expect(main.code).toBe(1);
    expect(main.log).toContain('::error::forkd: SIGINT: the job was cancelled');
    await until('the VM to exit', () => job.leftovers().length === 0, 5_000);
    const post = await teardown(job);
    expect(post).toContain('the main step did not get as far as starting the engine');
    expect(post).not.toContain('process(es) the job left running');
  }, 300_000);

  test('a main step killed outright: teardown reaps the commands and VMs it left', async () => {
    const { job, step } = await mainInWarmup('killed');
    process.kill(step.pid, 'SIGKILL'); // no chance to pass anything on
    await step.done;
    expect(job.leftovers().length).toBeGreaterThanOrEqual(2); // the orphaned `forkd snapshot` and its QEMU
    expect(await teardown(job)).toMatch(/::warning::forkd: stopped \d+ process\(es\) the job left running/);
  }, 300_000);

  test('version: a release is downloaded once into the tool cache, checked, and its engine runs the job', async () => {
    const releases = join(work, 'releases');
    const release = (version: string) =>
      execFileSync(
        process.execPath,
        ['scripts/release.mjs', '--version', version, '--out', join(releases, `v${version}`)],
        {
          cwd: root,
        },
      );
    release('0.1.0-test.1');
    release('0.1.0-test.2');
    const asset = join(releases, 'v0.1.0-test.2/forkd-0.1.0-test.2-linux-x64.tar.gz.sha256');
    writeFileSync(asset, `${'0'.repeat(64)}  forkd-0.1.0-test.2-linux-x64.tar.gz\n`);
    const requests: string[] = [];
    const server = createServer((req, res) => {
      requests.push(req.url!);
      const file = join(releases, decodeURIComponent(req.url!));
      if (!file.startsWith(`${releases}/`) || !existsSync(file)) return void res.writeHead(404).end();
      createReadStream(file).pipe(res);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const env = { FORKD_RELEASES_URL: base };
    try {
      const job = runner.job('release');
      job.seedImages();
      const main = await job.run('main', { version: 'v0.1.0-test.1', 'pool-size': '0', cache: 'false' }, { env });
      expect(main.code, main.log).toBe(0);
      expect(main.log).toContain(`downloading engine 0.1.0-test.1 from ${base}/v0.1.0-test.1/`);
      const client = new Controller({ endpoint: job.env.FORKD_ENDPOINT!, token: job.env.FORKD_TOKEN! });
      expect((await client.version()).version).toBe('0.1.0-test.1'); // the release's engine, not the bundled one
      {
        await using child = await client.createSandbox('base');
        expect((await child.exec(['echo', 'released'])).stdout.toString()).toBe('released\n');
      }
      await client.close();
      await teardown(job);
      expect(requests).toHaveLength(2); // the tarball and its .sha256

      const again = runner.job('release-again');
      again.seedImages();
      const second = await again.run('main', { version: '0.1.0-test.1', 'pool-size': '0', cache: 'false' }, { env });
      expect(second.code, second.log).toBe(0);
      expect(second.log).toContain('forkd: engine 0.1.0-test.1 from the tool cache');
      expect(requests).toHaveLength(2);
      await teardown(again);

      const missing = await runner.job('release-missing').run('main', { version: '9.9.9' }, { env });
      expect(missing.code).toBe(1);
      expect(missing.log).toContain(
        `::error::could not download forkd 9.9.9 from ${base}/v9.9.9/forkd-9.9.9-linux-x64.tar.gz (HTTP 404)`,
      );
      const tampered = await runner.job('release-tampered').run('main', { version: '0.1.0-test.2' }, { env });
      expect(tampered.code).toBe(1);
      expect(tampered.log).toMatch(/::error::forkd 0.1.0-test.2: the download's sha256 is [0-9a-f]{64}, not 0{64}/);
      expect(existsSync(join(work, 'toolcache/forkd/0.1.0-test.2'))).toBe(false);
    } finally {
      server.close();
    }
  }, 300_000);

  test.each([
    { example: 'vitest-postgres', runs: 'vitest run', passed: /Tests {2}23 passed \(23\)/, forks: 20, tag: 'postgres' },
    { example: 'pytest-postgres', runs: 'pytest -n 2', passed: /\b19 passed\b/, forks: 18, tag: 'postgres' },
    { example: 'playwright-app', runs: 'playwright test', passed: /\b16 passed\b/, forks: 15, tag: 'todo-app' },
  ])(
    'the example workflow $example: the Action with its recipe, then the suite against its engine',
    async ({ example, runs, passed, forks: minimumForks, tag }) => {
      const workflow = parseYaml(readFileSync(join(root, `examples/workflows/${example}.yml`), 'utf8')) as {
        jobs: Record<string, { steps: Array<{ uses?: string; with?: Record<string, unknown>; run?: string }> }>;
      };
      const steps = Object.values(workflow.jobs)[0]!.steps;
      const at = steps.findIndex((step) => step.uses?.startsWith('deeplethe/forkd-action@'));
      expect(at).toBeGreaterThan(0);
      const inputs = Object.fromEntries(Object.entries(steps[at]!.with ?? {}).map(([k, v]) => [k, String(v)]));
      const later = steps.slice(at + 1).flatMap((step) => (step.run ? [step.run] : []));
      expect(later.join('\n')).toContain(runs);

      const job = runner.job(`workflow-${example}`);
      job.linkImages();
      const main = await job.run('main', inputs);
      expect(main.code, main.log).toBe(0);
      expect(job.outputs['snapshot-tag']).toBe(tag);
      expect(job.env).toMatchObject({ FORKD_SNAPSHOT: tag, FORKD_SNAPSHOT_SOURCE: inputs.snapshot });
      const client = new Controller({ endpoint: job.env.FORKD_ENDPOINT!, token: job.env.FORKD_TOKEN! });
      expect(await client.getSnapshot(tag)).toMatchObject({ pool_size: Number(inputs['pool-size']) });
      for (const command of later) {
        const step = await job.shell(command);
        expect(step.code, step.log).toBe(0);
        expect(step.log).toMatch(passed);
      }
      // the suite found the Action's pool big enough and left it as it was, for the job's next steps
      expect(await client.getSnapshot(tag)).toMatchObject({ pool_size: Number(inputs['pool-size']) });
      // its recipe forked the Action's snapshot: it took none of its own (its checkpoints are gone)
      expect((await client.listSnapshots()).map((s) => s.tag)).toEqual([tag]);
      const audit = readFileSync(join(job.home, 'audit.log'), 'utf8');
      expect(audit).not.toMatch(/"method":"POST","path":"\/v1\/snapshots"/);
      await client.close();
      await teardown(job);
      const forks = Number(new RegExp(`<td>${tag}</td><td>(\\d+)</td>`).exec(job.summary)?.[1]);
      expect(forks).toBeGreaterThanOrEqual(minimumForks); // the suite forked from the Action's engine, not its own
    },
    1_200_000,
  );

  test("the project's own forkd-action, of another version than the Action's, runs the job: its tests' client matches", async () => {
    const job = runner.job('project-engine');
    job.seedImages();
    // what `npm ci` leaves in the workspace; lib/ is copied: its package root (and version) is where it really lies
    const installed = join(job.dir, 'node_modules', 'forkd-action');
    for (const dir of ['bin', 'lib']) cpSync(join(root, dir), join(installed, dir), { recursive: true });
    for (const dir of ['native', 'recipes', 'scripts']) symlinkSync(join(root, dir), join(installed, dir));
    for (const dep of readdirSync(join(root, 'node_modules')))
      // its dependencies, hoisted beside it
      if (!dep.startsWith('.')) symlinkSync(join(root, 'node_modules', dep), join(job.dir, 'node_modules', dep));
    const version = '0.0.1-other';
    writeFileSync(join(installed, 'package.json'), JSON.stringify({ name: 'forkd-action', version, type: 'module' }));
    const main = await job.run(
      'main',
      { snapshot: 'base', cache: 'false', 'pool-size': '0' },
      { env: { GITHUB_WORKSPACE: job.dir } },
    );
    expect(main.code, main.log).toBe(0);
    expect(main.log).toContain(
      `forkd: engine ${version} from the project's node_modules/forkd-action (the Action bundles ${packageVersion})`,
    );
    const client = new Controller({
      endpoint: job.env.FORKD_ENDPOINT!,
      token: job.env.FORKD_TOKEN!,
      clientVersion: version,
    });
    await client.ensureCompatible();
    await client.close();
    await teardown(job);
  }, 300_000);

  test('bad inputs fail the step naming the input', async () => {
    const job = runner.job('bad-input');
    const main = await job.run('main', { 'pool-size': 'lots' });
    expect(main.code).toBe(1);
    expect(main.log).toContain('::error::input pool-size: "lots" is not a whole number from 0 to 99');
  });
});
