import { execFileSync, spawn } from 'node:child_process';
import {
  cpSync,
  createReadStream,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { Controller } from '../../src/client/controller.js';
import { StatePaths } from '../../src/engine/state-dir.js';
import { FakeCacheService } from '../helpers/fake-cache-service.js';

const root = join(import.meta.dirname, '../..');
const action = join(root, 'dist/action.mjs');
const work = mkdtempSync(join(tmpdir(), 'forkd-action-test-'));

/** A `name<<delimiter ... delimiter` file, as the runner reads GITHUB_OUTPUT, GITHUB_ENV and GITHUB_STATE. */
function parseCommandFile(file: string): Record<string, string> {
  const values: Record<string, string> = {};
  const text = existsSync(file) ? readFileSync(file, 'utf8') : '';
  for (const m of text.matchAll(/^([^<\n]+)<<(\S+)\n([\s\S]*?)\n\2$/gm)) values[m[1]!] = m[3]!;
  return values;
}

interface StepOptions {
  env?: Record<string, string>;
  /** A command the step runs under (as `unshare ...`). */
  wrap?: string[];
  /** The workspace (recipes given as ./paths are found from it). */
  cwd?: string;
}

interface StepResult {
  code: number | null;
  log: string;
}

interface RunningStep {
  /** What the runner signals when the job is cancelled. */
  pid: number;
  log: () => string;
  done: Promise<StepResult>;
}

/** One job on one runner: the Action's main step, later steps, and its post step, each its own process. */
class Job {
  readonly dir: string;
  readonly home: string;
  private readonly groups = new Set<number>();

  constructor(name: string) {
    jobs.push(this);
    this.dir = join(work, name);
    // the same path in every job, as RUNNER_TEMP on a runner (the cache is keyed by its paths);
    // emptied first: each job starts on a fresh machine
    this.home = join(work, 'runner-temp', 'forkd');
    rmSync(this.home, { recursive: true, force: true });
    mkdirSync(this.home, { recursive: true });
    mkdirSync(this.dir, { recursive: true });
    for (const file of ['output', 'env', 'state', 'summary']) writeFileSync(join(this.dir, file), '');
  }

  get outputs() {
    return parseCommandFile(join(this.dir, 'output'));
  }

  /** What later steps see: the variables the Action exported. */
  get env() {
    return parseCommandFile(join(this.dir, 'env'));
  }

  get summary() {
    return readFileSync(join(this.dir, 'summary'), 'utf8');
  }

  /** Runs one phase as the runner does: inputs as INPUT_*, state as STATE_* in post. */
  run(phase: 'main' | 'post', inputs: Record<string, string> = {}, options: StepOptions = {}): Promise<StepResult> {
    return this.start(phase, inputs, options).done;
  }

  /** Starts one phase. */
  start(
    phase: 'main' | 'post',
    inputs: Record<string, string> = {},
    { env: extraEnv = {}, wrap = [], cwd = root }: StepOptions = {},
  ): RunningStep {
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      GITHUB_OUTPUT: join(this.dir, 'output'),
      GITHUB_ENV: join(this.dir, 'env'),
      GITHUB_STATE: join(this.dir, 'state'),
      GITHUB_STEP_SUMMARY: join(this.dir, 'summary'),
      RUNNER_TEMP: this.dir,
      RUNNER_TOOL_CACHE: join(work, 'toolcache'),
      FORKD_HOME: this.home,
      ...extraEnv,
    };
    delete env.FORKD_ENDPOINT;
    delete env.FORKD_TOKEN;
    for (const [name, value] of Object.entries(inputs)) env[`INPUT_${name.toUpperCase()}`] = value;
    if (phase === 'post') {
      Object.assign(env, this.env);
      for (const [name, value] of Object.entries(parseCommandFile(join(this.dir, 'state'))))
        env[`STATE_${name}`] = value;
    }
    const [command = process.execPath, ...args] = [...wrap, process.execPath, action];
    return this.spawnStep(command, args, env, cwd);
  }

  /** Each step in its own process group, so a test that fails or times out can take the step's children with it. */
  private spawnStep(command: string, args: string[], env: NodeJS.ProcessEnv, cwd: string): RunningStep {
    const child = spawn(command, args, { env, cwd, detached: true });
    this.groups.add(child.pid!);
    let log = '';
    child.stdout.on('data', (c: Buffer) => (log += c.toString()));
    child.stderr.on('data', (c: Buffer) => (log += c.toString()));
    const done = new Promise<StepResult>((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (code) => {
        this.groups.delete(child.pid!);
        resolve({ code, log });
      });
    });
    return { pid: child.pid!, log: () => log, done };
  }

  /** Processes of this job still running: any naming its home, or started with it as FORKD_HOME. */
  leftovers(): string[] {
    const read = (file: string) => {
      try {
        return readFileSync(file, 'utf8');
      } catch {
        return '';
      }
    };
    return readdirSync('/proc')
      .filter((pid) => /^\d+$/.test(pid))
      .filter((pid) => read(`/proc/${pid}/stat`).split(') ')[1]?.[0] !== 'Z')
      .map((pid) => ({ cmdline: read(`/proc/${pid}/cmdline`), environ: `\0${read(`/proc/${pid}/environ`)}` }))
      .filter((p) => p.cmdline.includes(this.home) || p.environ.includes(`\0FORKD_HOME=${this.home}\0`))
      .map((p) => p.cmdline.replace(/\0/g, ' '));
  }

  /**
   * Kills what a failed test left: the steps' process groups, the daemon main started (detached,
   * so in no group; its pid is in the job's state), and whatever runs from this home.
   */
  reap(): void {
    const state = parseCommandFile(join(this.dir, 'state')).forkd;
    const daemon = state ? (JSON.parse(state) as { daemonPid: number }).daemonPid : undefined;
    if (daemon) {
      try {
        process.kill(daemon, 'SIGTERM'); // it takes its VMs with it
      } catch {
        // already stopped by post
      }
    }
    for (const group of this.groups) {
      try {
        process.kill(-group, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
      try {
        if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(this.home)) process.kill(Number(pid), 'SIGKILL');
      } catch {
        // gone meanwhile
      }
    }
  }

  /** Copies the built guest (kernel, initramfs, agent) from the shared cache: no kernel build in tests. */
  seedImages(): void {
    const shared = new StatePaths();
    for (const kind of ['kernel', 'initramfs', 'agent']) {
      cpSync(shared.images(kind), join(this.home, 'images', kind), { recursive: true });
    }
    cpSync(shared.file('accel.json'), join(this.home, 'accel.json'));
  }

  /** The runner's images are the shared cache's (a symlink, as the tests' isolated homes): recipes build once. */
  linkImages(): void {
    const shared = new StatePaths();
    mkdirSync(shared.images(''), { recursive: true });
    symlinkSync(shared.images(''), join(this.home, 'images'));
    cpSync(shared.file('accel.json'), join(this.home, 'accel.json'));
  }

  /** A later `run:` step: a shell in the workspace with the variables the Action exported. */
  shell(command: string): Promise<StepResult> {
    const env: NodeJS.ProcessEnv = { ...process.env, ...this.env, NO_COLOR: '1' };
    for (const name of ['VITEST', 'VITEST_POOL_ID', 'VITEST_WORKER_ID']) delete env[name]; // a run of its own
    return this.spawnStep('bash', ['-c', command], env, root).done;
  }

  /** A recipe in the job's workspace (booting the embedded initramfs: nothing to build); its ./path. */
  writeRecipe(name: string, warmup: string): string {
    mkdirSync(join(this.dir, 'ci', name), { recursive: true });
    const recipe = { description: `${name}: an action test recipe`, base: 'none', warmup };
    writeFileSync(join(this.dir, 'ci', name, 'recipe.json'), JSON.stringify(recipe));
    return `./ci/${name}`;
  }
}

async function until(what: string, ready: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ready()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

const withoutKvm = [
  'unshare',
  '--mount',
  '--propagation',
  'private',
  'bash',
  join(root, 'test/helpers/without-kvm.sh'),
];

const cache = new FakeCacheService();
let cacheUrl = '';

beforeAll(async () => {
  cacheUrl = await cache.start();
});

const jobs: Job[] = [];

afterAll(async () => {
  for (const job of jobs) job.reap();
  await cache.close();
  rmSync(work, { recursive: true, force: true });
});

describe('the Action, run as the runner runs it', () => {
  test('setup leaves an engine later steps fork from; teardown stops everything and writes the summary', async () => {
    const job = new Job('first');
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

    const post = await job.run('post', {}, { env: cacheEnv });
    expect(post.code, post.log).toBe(0);
    expect(post.log).toContain('images saved to the cache');
    expect(post.log).toContain('snapshots saved to the cache');
    expect(job.leftovers()).toEqual([]);
    expect(job.summary).toContain('<th>accelerator</th><th>snapshot</th><th>forks served</th>');
    expect(job.summary).toMatch(
      /<td>tcg<\/td><td>base<\/td><td>3<\/td><td>[\d.]+ ms<\/td><td>[\d.]+ ms<\/td><td>\d+<\/td>/,
    );
    expect(cache.entries.filter((e) => e.archive)).toHaveLength(2);
  }, 300_000);

  test('a second run restores the images and the snapshot from the cache instead of making them', async () => {
    const job = new Job('second'); // an empty state dir: only the cache can make this fast
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
    const post = await job.run('post', {}, { env: cacheEnv });
    expect(post.code, post.log).toBe(0);
    expect(post.log).not.toContain('images saved to the cache'); // a hit needs no save
    expect(job.leftovers()).toEqual([]);
  }, 600_000);

  test('an unknown recipe fails the step with the reason; teardown still runs and finds nothing to stop', async () => {
    const job = new Job('unknown');
    job.seedImages();
    const main = await job.run('main', { snapshot: 'no-such-recipe', cache: 'false' });
    expect(main.code).toBe(1);
    expect(main.log).toMatch(/::error::forkd build no-such-recipe failed \(exit 1\):%0A.*no-such-recipe/);
    const post = await job.run('post');
    expect(post.code).toBe(0);
    expect(post.log).toContain('the main step did not get as far as starting the engine');
    expect(job.leftovers()).toEqual([]);
  }, 300_000);

  test("a build failure fails the step with the command's error and the guest console tail", async () => {
    const job = new Job('broken');
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
    expect((await job.run('post')).code).toBe(0);
    expect(job.leftovers()).toEqual([]);
  }, 300_000);

  test('no /dev/kvm: accel: kvm fails naming why; auto runs under TCG with a warning annotation', async () => {
    const strict = new Job('no-kvm-strict');
    strict.seedImages();
    const failed = await strict.run('main', { accel: 'kvm', cache: 'false' }, { wrap: withoutKvm });
    expect(failed.code).toBe(1);
    expect(failed.log).toContain(
      '::error::accel: kvm was asked for, but KVM is not usable here: /dev/kvm does not exist',
    );
    expect((await strict.run('post')).code).toBe(0);
    expect(strict.leftovers()).toEqual([]);

    const auto = new Job('no-kvm-auto');
    auto.seedImages();
    const main = await auto.run('main', { 'pool-size': '0', cache: 'false' }, { wrap: withoutKvm });
    expect(main.code, main.log).toBe(0);
    expect(main.log).toContain('::warning::KVM is not usable here (/dev/kvm does not exist');
    expect(auto.outputs.accel).toBe('tcg');
    expect(auto.env.FORKD_ACCEL).toBe('tcg');
    expect((await auto.run('post')).code).toBe(0);
    expect(auto.leftovers()).toEqual([]);
  }, 300_000);

  test("a cancelled job: the step stops its commands and their VMs within the runner's grace period", async () => {
    const job = new Job('cancelled');
    job.seedImages();
    const recipe = job.writeRecipe('slow', 'sleep 600');
    const step = job.start('main', { snapshot: recipe, cache: 'false' }, { cwd: job.dir });
    await until(
      'the warm-up to run in a VM',
      () =>
        step.log().includes('snapshot: warm-up sleep 600') && job.leftovers().some((c) => c.includes('qemu-system')),
      120_000,
    );
    process.kill(step.pid, 'SIGINT'); // a cancel: the runner signals the step, then SIGTERM after 7.5 s
    const signalled = Date.now();
    const main = await step.done;
    expect(Date.now() - signalled).toBeLessThan(7_500);
    expect(main.code).toBe(1);
    expect(main.log).toContain('::error::forkd: SIGINT: the job was cancelled');
    await until('the VM to exit', () => job.leftovers().length === 0, 5_000);
    const post = await job.run('post');
    expect(post.code).toBe(0);
    expect(post.log).toContain('the main step did not get as far as starting the engine');
    expect(post.log).not.toContain('process(es) the job left running');
  }, 300_000);

  test('a main step killed outright: teardown reaps the commands and VMs it left', async () => {
    const job = new Job('killed');
    job.seedImages();
    const recipe = job.writeRecipe('slow', 'sleep 600');
    const step = job.start('main', { snapshot: recipe, cache: 'false' }, { cwd: job.dir });
    await until('the warm-up to run in a VM', () => job.leftovers().some((c) => c.includes('qemu-system')), 120_000);
    process.kill(step.pid, 'SIGKILL'); // no chance to pass anything on
    await step.done;
    expect(job.leftovers().length).toBeGreaterThanOrEqual(2); // the orphaned `forkd snapshot` and its QEMU
    const post = await job.run('post');
    expect(post.code).toBe(0);
    expect(post.log).toMatch(/::warning::forkd: stopped \d+ process\(es\) the job left running/);
    expect(job.leftovers()).toEqual([]);
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
      const job = new Job('release');
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
      expect((await job.run('post')).code).toBe(0);
      expect(job.leftovers()).toEqual([]);
      expect(requests).toHaveLength(2); // the tarball and its .sha256

      const again = new Job('release-again');
      again.seedImages();
      const second = await again.run('main', { version: '0.1.0-test.1', 'pool-size': '0', cache: 'false' }, { env });
      expect(second.code, second.log).toBe(0);
      expect(second.log).toContain('forkd: engine 0.1.0-test.1 from the tool cache');
      expect(requests).toHaveLength(2);
      expect((await again.run('post')).code).toBe(0);
      expect(again.leftovers()).toEqual([]);

      const missing = await new Job('release-missing').run('main', { version: '9.9.9' }, { env });
      expect(missing.code).toBe(1);
      expect(missing.log).toContain(
        `::error::could not download forkd 9.9.9 from ${base}/v9.9.9/forkd-9.9.9-linux-x64.tar.gz (HTTP 404)`,
      );
      const tampered = await new Job('release-tampered').run('main', { version: '0.1.0-test.2' }, { env });
      expect(tampered.code).toBe(1);
      expect(tampered.log).toMatch(/::error::forkd 0.1.0-test.2: the download's sha256 is [0-9a-f]{64}, not 0{64}/);
      expect(existsSync(join(work, 'toolcache/forkd/0.1.0-test.2'))).toBe(false);
    } finally {
      server.close();
    }
  }, 300_000);

  test('the example workflow: the Action with the postgres recipe, then the Vitest example against its engine', async () => {
    const workflow = parseYaml(readFileSync(join(root, 'examples/workflows/vitest-postgres.yml'), 'utf8')) as {
      jobs: Record<string, { steps: Array<{ uses?: string; with?: Record<string, unknown>; run?: string }> }>;
    };
    const steps = Object.values(workflow.jobs)[0]!.steps;
    const at = steps.findIndex((step) => step.uses?.startsWith('deeplethe/forkd-action@'));
    expect(at).toBeGreaterThan(0);
    const inputs = Object.fromEntries(Object.entries(steps[at]!.with ?? {}).map(([k, v]) => [k, String(v)]));
    const later = steps.slice(at + 1).flatMap((step) => (step.run ? [step.run] : []));
    expect(later.join('\n')).toContain('vitest run');

    const job = new Job('workflow');
    job.linkImages();
    const main = await job.run('main', inputs);
    expect(main.code, main.log).toBe(0);
    expect(job.outputs['snapshot-tag']).toBe('postgres');
    const client = new Controller({ endpoint: job.env.FORKD_ENDPOINT!, token: job.env.FORKD_TOKEN! });
    expect(await client.getSnapshot('postgres')).toMatchObject({ pool_size: Number(inputs['pool-size']) });
    for (const command of later) {
      const step = await job.shell(command);
      expect(step.code, step.log).toBe(0);
      expect(step.log).toMatch(/Tests {2}23 passed \(23\)/);
    }
    // the suite found the Action's pool big enough and left it as it was, for the job's next steps
    expect(await client.getSnapshot('postgres')).toMatchObject({ pool_size: Number(inputs['pool-size']) });
    await client.close();
    const post = await job.run('post');
    expect(post.code, post.log).toBe(0);
    expect(job.leftovers()).toEqual([]);
    const forks = Number(/<td>postgres<\/td><td>(\d+)<\/td>/.exec(job.summary)?.[1]);
    expect(forks).toBeGreaterThanOrEqual(20); // the suite forked from the Action's engine, not one of its own
  }, 1_200_000);

  test('bad inputs fail the step naming the input', async () => {
    const job = new Job('bad-input');
    const main = await job.run('main', { 'pool-size': 'lots' });
    expect(main.code).toBe(1);
    expect(main.log).toContain('::error::input pool-size: "lots" is not a whole number from 0 to 99');
  });
});
