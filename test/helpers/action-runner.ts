/**
 * Runs the Action's bundle as a GitHub runner does, on this machine: one `Job` per job, its steps
 * as processes with INPUT_*, the GITHUB_* command files and STATE_* for the post step. Shared by
 * the Action's tests and its benchmark.
 */
import { spawn } from 'node:child_process';
import {
  chmodSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StatePaths } from '../../src/common/state-dir.js';
import type { OrdinaryUser } from './ordinary-user.js';

export const root = join(import.meta.dirname, '../..');
/** What a runner downloads of this Action: its definition, its bundle and what the bundle reads. */
const ACTION_FILES = ['action.yml', 'package.json', 'dist', 'native', 'recipes', 'scripts'];

/** A `name<<delimiter ... delimiter` file, as the runner reads GITHUB_OUTPUT, GITHUB_ENV and GITHUB_STATE. */
function parseCommandFile(file: string): Record<string, string> {
  const values: Record<string, string> = {};
  const text = existsSync(file) ? readFileSync(file, 'utf8') : '';
  for (const m of text.matchAll(/^([^<\n]+)<<(\S+)\n([\s\S]*?)\n\2$/gm)) values[m[1]!] = m[3]!;
  return values;
}

export interface StepOptions {
  env?: Record<string, string>;
  /** A command the step runs under (as `unshare ...`). */
  wrap?: string[];
  /** The workspace (recipes given as ./paths are found from it). */
  cwd?: string;
}

export interface StepResult {
  code: number | null;
  log: string;
  /** Each line of the log with when it arrived, in ms since the step started (the benchmark's phases). */
  lines: Array<{ ms: number; text: string }>;
}

export interface RunningStep {
  /** What the runner signals when the job is cancelled. */
  pid: number;
  log: () => string;
  done: Promise<StepResult>;
}

/** One job on one runner: the Action's main step, later steps, and its post step, each its own process. */
export class Job {
  readonly dir: string;
  readonly home: string;
  private readonly groups = new Set<number>();

  constructor(
    private readonly work: string,
    name: string,
    /** The Action's checkout (the runner's `_actions/...`). */
    private readonly actionDir: string = root,
    /** The runner user the steps run as (default: this process's). */
    private readonly user?: OrdinaryUser,
  ) {
    this.dir = join(work, name);
    // the same path in every job, as RUNNER_TEMP on a runner (the cache is keyed by its paths);
    // emptied first: each job starts on a fresh machine
    this.home = join(this.work, 'runner-temp', 'forkd');
    rmSync(this.home, { recursive: true, force: true });
    mkdirSync(this.home, { recursive: true });
    mkdirSync(this.dir, { recursive: true });
    for (const file of ['output', 'env', 'state', 'summary']) writeFileSync(join(this.dir, file), '');
    this.giveToUser();
  }

  /** Everything the job wrote so far belongs to its runner user, as on a runner. */
  private giveToUser(): void {
    if (this.user) for (const dir of [this.dir, join(this.work, 'runner-temp')]) this.user.own(dir);
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
      ...(this.user ? this.user.env() : process.env),
      GITHUB_OUTPUT: join(this.dir, 'output'),
      GITHUB_ENV: join(this.dir, 'env'),
      GITHUB_STATE: join(this.dir, 'state'),
      GITHUB_STEP_SUMMARY: join(this.dir, 'summary'),
      RUNNER_TEMP: this.dir,
      RUNNER_TOOL_CACHE: join(this.work, 'toolcache'),
      FORKD_HOME: this.home,
      ...extraEnv,
    };
    for (const name of ['FORKD_ENDPOINT', 'FORKD_TOKEN', 'FORKD_SNAPSHOT', 'FORKD_SNAPSHOT_SOURCE']) delete env[name];
    for (const [name, value] of Object.entries(inputs)) env[`INPUT_${name.toUpperCase()}`] = value;
    if (phase === 'post') {
      Object.assign(env, this.env);
      for (const [name, value] of Object.entries(parseCommandFile(join(this.dir, 'state'))))
        env[`STATE_${name}`] = value;
    }
    const asUser = this.user ? this.user.command() : [];
    const action = join(this.actionDir, 'dist/action.mjs');
    const [command = process.execPath, ...args] = [...wrap, ...asUser, process.execPath, action];
    return this.spawnStep(command, args, env, cwd);
  }

  /** Each step in its own process group, so a test that fails or times out can take the step's children with it. */
  private spawnStep(command: string, args: string[], env: NodeJS.ProcessEnv, cwd: string): RunningStep {
    const started = performance.now();
    const child = spawn(command, args, { env, cwd, detached: true });
    this.groups.add(child.pid!);
    let log = '';
    const lines: StepResult['lines'] = [];
    const collect = (chunk: Buffer) => {
      const ms = performance.now() - started;
      const complete = (log.slice(log.lastIndexOf('\n') + 1) + chunk.toString()).split('\n').slice(0, -1);
      for (const text of complete) lines.push({ ms, text });
      log += chunk.toString();
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    const done = new Promise<StepResult>((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (code) => {
        this.groups.delete(child.pid!);
        resolve({ code, log, lines });
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
    this.copyAccelVerdicts(shared);
    this.giveToUser();
  }

  /** The runner's images are the shared cache's (a symlink, as the tests' isolated homes): recipes build once. */
  linkImages(): void {
    const shared = new StatePaths();
    mkdirSync(shared.images(''), { recursive: true });
    symlinkSync(shared.images(''), join(this.home, 'images'));
    this.copyAccelVerdicts(shared);
  }

  /** The shared cache's KVM probe verdicts, when it has any (a host without /dev/kvm needs no probe, so has none). */
  private copyAccelVerdicts(shared: StatePaths): void {
    if (existsSync(shared.file('accel.json'))) cpSync(shared.file('accel.json'), join(this.home, 'accel.json'));
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

export async function until(what: string, ready: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ready()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

export const withoutKvm = [
  'unshare',
  '--mount',
  '--propagation',
  'private',
  'bash',
  join(root, 'test/helpers/without-kvm.sh'),
];

/**
 * The runners' shared scratch (jobs, tool cache); `dispose` reaps what any job left and removes it.
 * With a user, the steps run as that user, from a copy of the Action as a runner downloads it.
 */
export class ActionRunner {
  readonly work = mkdtempSync(join(tmpdir(), 'forkd-action-'));
  private readonly jobs: Job[] = [];
  private readonly actionDir: string = root;

  constructor(private readonly user?: OrdinaryUser) {
    if (!user) return;
    chmodSync(this.work, 0o755);
    this.actionDir = join(this.work, '_actions', 'forkd-action');
    for (const file of ACTION_FILES) cpSync(join(root, file), join(this.actionDir, file), { recursive: true });
  }

  job(name: string): Job {
    const job = new Job(this.work, name, this.actionDir, this.user);
    this.jobs.push(job);
    return job;
  }

  dispose(): void {
    for (const job of this.jobs) job.reap();
    rmSync(this.work, { recursive: true, force: true });
  }
}
