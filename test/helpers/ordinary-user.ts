import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chownSync, cpSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Where a user's runs leave scratch files. */
export const SCRATCH_DIRS = ['/dev/shm', tmpdir()];

export interface RunResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/**
 * An ordinary Linux user made for one test (useradd gives it /etc/subuid and /etc/subgid ranges),
 * so the test stands where a user or a CI runner stands instead of running as root. Creating it
 * needs root: CI runs as root, and a run that is not fails here, loudly.
 */
export class OrdinaryUser {
  readonly name = `forkd-u${randomBytes(3).toString('hex')}`;
  readonly home: string;
  readonly uid: number;
  readonly gid: number;
  private readonly sudoers = `/etc/sudoers.d/${this.name}`;
  /** Where sudo logs what this user ran through it (only with passwordless sudo). */
  readonly sudoLog = `/var/log/${this.name}-sudo.log`;
  private readonly before: Set<string> = new Set();

  constructor(options: { passwordlessSudo?: boolean } = {}) {
    if (process.getuid?.() !== 0)
      throw new Error('tests that stand where a user stands create a user: run them as root');
    execFileSync('useradd', ['--create-home', '--shell', '/bin/bash', this.name]);
    this.home = `/home/${this.name}`;
    this.uid = Number(execFileSync('id', ['-u', this.name], { encoding: 'utf8' }));
    this.gid = Number(execFileSync('id', ['-g', this.name], { encoding: 'utf8' }));
    // a uid is reused once its user is gone: what an earlier owner of these ids left is not ours
    this.before = new Set(this.files(SCRATCH_DIRS));
    if (options.passwordlessSudo) {
      writeFileSync(
        this.sudoers,
        `Defaults:${this.name} logfile=${this.sudoLog}, loglinelen=0\n${this.name} ALL=(ALL) NOPASSWD: ALL\n`,
        { mode: 0o440 },
      );
    }
  }

  /** A directory outside the repository that the user owns. */
  makeDir(path: string): string {
    mkdirSync(path, { recursive: true });
    chownSync(path, this.uid, this.gid);
    return path;
  }

  /** Makes a tree the user's. */
  own(path: string): void {
    execFileSync('chown', ['-R', `${this.uid}:${this.gid}`, path]);
  }

  /** The prefix that runs a command as the user (the caller's environment goes with it). */
  command(): string[] {
    return ['setpriv', '--reuid', this.name, '--regid', String(this.gid), '--init-groups', '--'];
  }

  /** The environment a login of this user has: nothing of ours (no FORKD_*, no root HOME). */
  env(extra: Record<string, string> = {}): Record<string, string> {
    return {
      HOME: this.home,
      USER: this.name,
      LOGNAME: this.name,
      PATH: '/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin',
      LANG: 'C.UTF-8',
      ...extra,
    };
  }

  /** Runs a command as the user, in its own environment (`extra` added). */
  run(
    command: string,
    args: string[],
    options: { cwd: string; env?: Record<string, string>; timeoutMs?: number },
  ): Promise<RunResult> {
    const env = Object.entries(this.env(options.env)).map(([k, v]) => `${k}=${v}`);
    return new Promise((resolve, reject) => {
      const [setpriv, ...prefix] = this.command();
      const child = spawn(setpriv!, [...prefix, 'env', '-i', ...env, command, ...args], {
        cwd: options.cwd,
        stdio: ['ignore', 'pipe', 'pipe'],
        detached: true, // its own process group: a timeout takes everything it started
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
      child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
      const timer = setTimeout(() => {
        process.kill(-child.pid!, 'SIGKILL');
        reject(new Error(`${command} ${args.join(' ')} timed out as ${this.name}\n${stdout}\n${stderr}`));
      }, options.timeoutMs ?? 600_000);
      child.on('error', reject);
      child.on('close', (status) => {
        clearTimeout(timer);
        resolve({ status, stdout, stderr });
      });
    });
  }

  /** Whether a uid is this user's: its own, or one of its /etc/subuid range (user namespaces map onto it). */
  private ownership(): (uid: number) => boolean {
    const ranges = readFileSync('/etc/subuid', 'utf8')
      .split('\n')
      .map((line) => line.split(':'))
      .filter(([owner]) => owner === this.name)
      .map(([, start, count]) => [Number(start), Number(start) + Number(count)] as const);
    return (uid) => uid === this.uid || ranges.some(([from, to]) => uid >= from && uid < to);
  }

  /**
   * Processes of this user still running, in its user namespaces too (pid and command line). Zombies
   * are not: they have exited, and wait for init to reap them when they had daemonized (Chromium's
   * crashpad handler does), which a container's init may do seconds later.
   */
  processes(): string[] {
    const owns = this.ownership();
    return execFileSync('ps', ['-eo', 'uid=,stat=,pid=,args='], { encoding: 'utf8' })
      .split('\n')
      .map((line) => /^\s*(\d+)\s+(\S+)\s+(.*)$/.exec(line))
      .flatMap((m) => (m && owns(Number(m[1])) && !m[2]!.startsWith('Z') ? [m[3]!] : []));
  }

  /**
   * Entries of `dirs` (not below them) that belong to the user or its namespaces, but for `except`
   * and for those there before the user was made.
   */
  files(dirs: string[], except: string[] = []): string[] {
    const owns = this.ownership();
    return execFileSync('find', [...dirs, '-mindepth', '1', '-maxdepth', '1', '-printf', '%U %p\n'], {
      encoding: 'utf8',
    })
      .split('\n')
      .map((line) => /^(\d+) (.*)$/.exec(line))
      .flatMap((m) => (m && owns(Number(m[1])) && !except.includes(m[2]!) && !this.before.has(m[2]!) ? [m[2]!] : []));
  }

  /** Takes the user's /etc/subuid and /etc/subgid ranges away: user namespaces cannot map a Debian tree for it. */
  dropSubids(): void {
    const range = (file: string) => {
      const line = readFileSync(file, 'utf8')
        .split('\n')
        .find((l) => l.startsWith(`${this.name}:`));
      if (!line) return undefined;
      const [, start, count] = line.split(':').map(Number);
      return `${start}-${start! + count! - 1}`;
    };
    const [uids, gids] = [range('/etc/subuid'), range('/etc/subgid')];
    execFileSync('usermod', [
      ...(uids ? ['--del-subuids', uids] : []),
      ...(gids ? ['--del-subgids', gids] : []),
      this.name,
    ]);
  }

  /** What the user ran through sudo, one command a line (empty without passwordless sudo). */
  sudoCommands(): string[] {
    try {
      return readFileSync(this.sudoLog, 'utf8')
        .split('\n')
        .flatMap((line) => /COMMAND=(.*)$/.exec(line)?.[1] ?? []);
    } catch {
      return [];
    }
  }

  /** Kills what is left (a failed test's), removes the user, its home and its sudo rule. */
  remove(): void {
    try {
      execFileSync('pkill', ['-KILL', '-u', this.name]);
    } catch {
      // nothing left
    }
    rmSync(this.sudoers, { force: true });
    rmSync(this.sudoLog, { force: true });
    execFileSync('userdel', ['--remove', this.name], { stdio: 'ignore' });
    rmSync(this.home, { recursive: true, force: true });
  }

  /** A state dir for the user with the guest kernel copied in, so a test does not compile it again. */
  seedKernel(stateDir: string, rootStateDir: string): void {
    mkdirSync(join(stateDir, 'images'), { recursive: true });
    cpSync(join(rootStateDir, 'images', 'kernel'), join(stateDir, 'images', 'kernel'), { recursive: true });
    this.own(join(this.home, '.cache'));
  }
}
