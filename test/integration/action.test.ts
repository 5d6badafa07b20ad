import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
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
  run(
    phase: 'main' | 'post',
    inputs: Record<string, string> = {},
    extraEnv: Record<string, string> = {},
  ): Promise<{ code: number | null; log: string }> {
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      GITHUB_OUTPUT: join(this.dir, 'output'),
      GITHUB_ENV: join(this.dir, 'env'),
      GITHUB_STATE: join(this.dir, 'state'),
      GITHUB_STEP_SUMMARY: join(this.dir, 'summary'),
      RUNNER_TEMP: this.dir,
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
    return new Promise((resolve, reject) => {
      // its own process group, so a test that fails or times out can take the step's children with it
      const child = spawn(process.execPath, [action], { env, cwd: root, detached: true });
      this.groups.add(child.pid!);
      child.on('close', () => this.groups.delete(child.pid!));
      let log = '';
      child.stdout.on('data', (c: Buffer) => (log += c.toString()));
      child.stderr.on('data', (c: Buffer) => (log += c.toString()));
      child.on('error', reject);
      child.on('close', (code) => resolve({ code, log }));
    });
  }

  /** QEMU or forkd processes of this job still running. */
  leftovers(): string[] {
    return readdirSync('/proc')
      .filter((pid) => /^\d+$/.test(pid))
      .map((pid) => {
        try {
          return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
        } catch {
          return '';
        }
      })
      .filter((cmd) => cmd.includes(this.home));
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
}

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
    const main = await job.run('main', { snapshot: 'base', 'pool-size': '1' }, cacheEnv);
    expect(main.code, main.log).toBe(0);
    expect(main.log).toContain('no cached images for forkd-images-');
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

    const post = await job.run('post', {}, cacheEnv);
    expect(post.code, post.log).toBe(0);
    expect(post.log).toContain('images saved to the cache');
    expect(job.leftovers()).toEqual([]);
    expect(job.summary).toContain('<th>accelerator</th><th>snapshot</th><th>forks served</th>');
    expect(job.summary).toMatch(
      /<td>tcg<\/td><td>base<\/td><td>3<\/td><td>[\d.]+ ms<\/td><td>[\d.]+ ms<\/td><td>\d+<\/td>/,
    );
    expect(cache.entries.filter((e) => e.archive)).toHaveLength(1);
  }, 300_000);

  test('a second run restores the images from the cache instead of building them', async () => {
    const job = new Job('second'); // an empty state dir: only the cache can make this fast
    const cacheEnv = { ACTIONS_CACHE_URL: cacheUrl, ACTIONS_RUNTIME_TOKEN: 'test-token' };
    const main = await job.run('main', { snapshot: 'base', 'pool-size': '0' }, cacheEnv);
    expect(main.code, main.log).toBe(0);
    expect(main.log).toContain('images restored from the cache');
    expect(main.log).not.toContain('kernel: compile');
    const post = await job.run('post', {}, cacheEnv);
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
    expect(post.log).toContain('the main step started nothing');
    expect(job.leftovers()).toEqual([]);
  }, 300_000);

  test('bad inputs fail the step naming the input', async () => {
    const job = new Job('bad-input');
    const main = await job.run('main', { 'pool-size': 'lots' });
    expect(main.code).toBe(1);
    expect(main.log).toContain('::error::input pool-size: "lots" is not a whole number from 0 to 99');
  });
});
