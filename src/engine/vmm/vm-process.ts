import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, openSync, readFileSync, rmSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { debuglog } from '../../common/debug.js';
import { ForkdError, type ErrorCode } from '../../errors.js';
import { AgentClient } from '../agent/client.js';
import { which } from '../host-tools.js';
import { runsFrom } from '../process-alive.js';
import { onProcessExit } from '../reaper.js';
import type { StatePaths } from '../../common/state-dir.js';
import { buildQemuArgs, type VmSockets, type VmSpec } from './qemu-args.js';
import type { QemuBinary } from './qemu-binary.js';
import { QmpClient } from './qmp.js';
import { sweepStaleRunDirs } from './run-dirs.js';

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** The QEMU process: one we spawned, or one a previous forkd process left running that we adopted. */
interface ProcessHandle {
  pid: number;
  exited: Promise<ExitInfo>;
  kill(): void;
}

/** What a QEMU is for, as the daemon's ledger records it. */
export type VmRole = 'child' | 'spare' | 'branch-helper' | 'parent' | 'probe';

/** What a ledger records of a QEMU: enough to find it again, and to adopt or reap it. */
export type LaunchedVm = Pick<VmProcess, 'id' | 'runDir' | 'pid' | 'spec'>;

/** Told of every QEMU launched (or adopted) with it, and of its end: the daemon's ledger of VMs. */
export interface VmLedgerHook {
  /** Called right after the spawn, before anything is awaited: a record exists before the QEMU can outlive us. */
  launched(vm: LaunchedVm, role: VmRole, snapshot: string | undefined): void;
  ended(vm: LaunchedVm): void;
}

export interface LaunchOptions {
  /** Open file descriptors QEMU inherits as fd 3, 4, ... (e.g. device state for `fd:3`). */
  inheritFds?: number[];
  /**
   * Default true: QEMU gets a parent-death signal, so it can never outlive this process. The
   * daemon turns it off so its sandboxes survive a daemon restart and are adopted (adopt()).
   */
  dieWithParent?: boolean;
  ledger?: VmLedgerHook;
  /** What this QEMU is for (default `child`), and the snapshot it restores or copies. */
  role?: VmRole;
  snapshot?: string;
}

const ADOPTED_EXIT_POLL_MS = 250;
const debug = debuglog('vm');

function spawned(child: ChildProcess): ProcessHandle {
  return {
    pid: child.pid ?? -1,
    exited: new Promise<ExitInfo>((resolve) => {
      child.on('exit', (code, signal) => resolve({ code, signal }));
      child.on('error', () => resolve({ code: null, signal: null }));
    }),
    kill: () => child.kill('SIGKILL'),
  };
}

/** A process we did not spawn: its exit is noticed by polling (Node has no pidfd). */
function adopted(pid: number, runDir: string): ProcessHandle {
  const isOurs = () => runsFrom(pid, runDir);
  return {
    pid,
    exited: new Promise<ExitInfo>((resolve) => {
      const timer = setInterval(() => {
        if (isOurs()) return;
        clearInterval(timer);
        resolve({ code: null, signal: null });
      }, ADOPTED_EXIT_POLL_MS);
    }),
    kill: () => {
      try {
        if (isOurs()) process.kill(pid, 'SIGKILL');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err; // it exited since isOurs()
      }
    },
  };
}

const SOCKET_PATH_MAX = 107;
const SOCKET_POLL_MS = 1;

/** The last lines of `text`; the serial console ends lines with CRLF. */
function tail(text: string, lines: number): string {
  return text.replace(/\r\n/g, '\n').trim().split('\n').slice(-lines).join('\n');
}

function readTail(path: string, lines = 20): string {
  try {
    return tail(readFileSync(path, 'utf8'), lines);
  } catch {
    return '';
  }
}

export function describeExit(info: ExitInfo): string {
  return info.signal ?? `code ${info.code}`;
}

/**
 * One QEMU process with its run dir, QMP and agent connections. Owns the process until cleanup():
 * the process is registered with the reaper, so it dies with this Node process whatever happens.
 */
export class VmProcess {
  exitInfo: ExitInfo | undefined;
  agent!: AgentClient;
  qmp!: QmpClient;

  private constructor(
    readonly id: string,
    readonly spec: VmSpec,
    readonly runDir: string,
    readonly sockets: VmSockets,
    private readonly handle: ProcessHandle,
    private readonly unregisterReaper: () => void,
    /** performance.now() when QEMU was spawned (or adopted). */
    readonly spawnedAt: number,
    private readonly ledger: VmLedgerHook | undefined,
  ) {
    void handle.exited.then((info) => {
      this.exitInfo = info;
      debug(id, 'QEMU pid %d exited (%s)', handle.pid, describeExit(info));
    });
  }

  get pid(): number {
    return this.handle.pid;
  }

  get exited(): Promise<ExitInfo> {
    return this.handle.exited;
  }

  private static socketsIn(runDir: string, paths: StatePaths): VmSockets {
    const id = basename(runDir);
    return {
      qmp: join(runDir, 'qmp.sock'),
      agent: join(runDir, 'agent.sock'),
      pidFile: join(runDir, 'qemu.pid'),
      stderrFile: join(runDir, 'qemu.stderr'),
      consoleLog: join(paths.logs(), `${id}.log`),
    };
  }

  /** Spawns QEMU and connects to its QMP and agent sockets; on any failure nothing is left behind. */
  static async launch(
    spec: VmSpec,
    paths: StatePaths,
    qemu: QemuBinary,
    deadline: number,
    options: LaunchOptions = {},
  ): Promise<VmProcess> {
    const id = `vm-${randomBytes(5).toString('hex')}`;
    const runDir = join(paths.run(), id);
    const sockets = VmProcess.socketsIn(runDir, paths);
    if (sockets.agent.length > SOCKET_PATH_MAX) {
      throw new ForkdError(
        'FORKD_ERR_BAD_INPUT',
        `socket path ${sockets.agent} is longer than ${SOCKET_PATH_MAX} bytes`,
        {
          hint: 'set FORKD_HOME to a shorter directory',
        },
      );
    }
    sweepStaleRunDirs(paths.run());
    await mkdir(runDir, { recursive: true, mode: 0o700 });
    await writeFile(join(runDir, 'owner.pid'), String(process.pid));

    const args = buildQemuArgs(spec, sockets, qemu.features);
    // setpriv ties QEMU's life to ours: if this process dies without cleaning up, the kernel kills QEMU.
    const setpriv = options.dieWithParent === false ? undefined : which('setpriv');
    const [file, argv] = setpriv ? [setpriv, ['--pdeathsig', 'KILL', '--', qemu.path, ...args]] : [qemu.path, args];
    const spawnedAt = performance.now();
    // QEMU's stderr goes to a file, not a pipe: a VM that outlives us must not die writing to it.
    const stderr = openSync(sockets.stderrFile, 'w');
    let child: ChildProcess;
    try {
      // detached: a session of its own, so a terminal's Ctrl-C reaches the process that owns the VM
      // (which stops it cleanly) and not QEMU itself (a VM killed under its owner counts as failed)
      child = spawn(file, argv, { stdio: ['ignore', 'ignore', stderr, ...(options.inheritFds ?? [])], detached: true });
    } finally {
      closeSync(stderr);
    }
    const handle = spawned(child);
    debug(id, 'launched QEMU pid %d (%d MiB, %s)', handle.pid, spec.memoryMiB, spec.incoming ? 'incoming' : 'boot');
    // this process exits with the VM still running (Ctrl-C, process.exit): nothing failed, nothing to keep
    const unregister = onProcessExit(() => {
      handle.kill();
      rmSync(runDir, { recursive: true, force: true });
      rmSync(sockets.consoleLog, { force: true });
    });
    const proc = new VmProcess(id, spec, runDir, sockets, handle, unregister, spawnedAt, options.ledger);
    try {
      options.ledger?.launched(proc, options.role ?? 'child', options.snapshot);
      [proc.agent, proc.qmp] = await Promise.all([
        proc.connectWhenListening(() => AgentClient.connect(sockets.agent), deadline),
        proc.connectWhenListening(() => QmpClient.connect(sockets.qmp), deadline),
      ]);
    } catch (err) {
      await proc.discard();
      throw err;
    }
    return proc;
  }

  /**
   * Takes over a QEMU that a previous forkd process started (and that is still running from
   * `runDir`): reconnects to its QMP and agent sockets. Throws if it is gone.
   */
  static async adopt(runDir: string, spec: VmSpec, paths: StatePaths, ledger?: VmLedgerHook): Promise<VmProcess> {
    const sockets = VmProcess.socketsIn(runDir, paths);
    const pid = Number(readFileSync(sockets.pidFile, 'utf8').trim());
    const handle = adopted(pid, runDir);
    debug(basename(runDir), 'adopting QEMU pid %d', pid);
    // this process exits with the VM still running (Ctrl-C, process.exit): nothing failed, nothing to keep
    const unregister = onProcessExit(() => {
      handle.kill();
      rmSync(runDir, { recursive: true, force: true });
      rmSync(sockets.consoleLog, { force: true });
    });
    const proc = new VmProcess(basename(runDir), spec, runDir, sockets, handle, unregister, performance.now(), ledger);
    try {
      [proc.agent, proc.qmp] = await Promise.all([AgentClient.connect(sockets.agent), QmpClient.connect(sockets.qmp)]);
    } catch (err) {
      await proc.cleanup(false); // nobody is waiting for this VM any more: leave nothing of it
      throw err;
    }
    return proc;
  }

  /**
   * The pid of the QEMU a previous forkd process started from `runDir`, while it runs: from the
   * pid file QEMU writes, or else the pid it was spawned with (it may not have written the file yet).
   */
  private static leftoverPid(runDir: string, spawnedPid?: number): number | undefined {
    let pid = spawnedPid;
    try {
      const written = Number(readFileSync(join(runDir, 'qemu.pid'), 'utf8').trim());
      if (written > 0) pid = written;
    } catch {
      // no pid file: QEMU died starting, was killed before writing it, or the run dir is gone
    }
    return pid !== undefined && runsFrom(pid, runDir) ? pid : undefined;
  }

  static leftoverRunning(runDir: string, spawnedPid?: number): boolean {
    return VmProcess.leftoverPid(runDir, spawnedPid) !== undefined;
  }

  /**
   * Kills the QEMU a previous forkd process started from `runDir` (if it still runs) without
   * connecting to it, and removes its run dir and console log.
   */
  static async reapLeftover(runDir: string, paths: StatePaths, spawnedPid?: number): Promise<void> {
    const pid = VmProcess.leftoverPid(runDir, spawnedPid);
    if (pid !== undefined) {
      const handle = adopted(pid, runDir);
      handle.kill();
      await handle.exited;
    }
    rmSync(runDir, { recursive: true, force: true });
    rmSync(VmProcess.socketsIn(runDir, paths).consoleLog, { force: true });
  }

  private async connectWhenListening<T>(connect: () => Promise<T>, deadline: number): Promise<T> {
    for (;;) {
      if (this.exitInfo)
        throw this.failure('FORKD_ERR_QEMU_EXITED', `QEMU exited during start (${describeExit(this.exitInfo)})`);
      if (Date.now() > deadline) throw this.failure('FORKD_ERR_BOOT_TIMEOUT', 'QEMU did not open its sockets in time');
      try {
        return await connect();
      } catch {
        await sleep(SOCKET_POLL_MS);
      }
    }
  }

  /** The last `lines` lines of the guest console ('' when it printed nothing yet). */
  consoleTail(lines = 20): string {
    return readTail(this.sockets.consoleLog, lines);
  }

  /** An error that carries QEMU's stderr, the console log path and its tail. */
  failure(code: ErrorCode, message: string, hint?: string): ForkdError {
    const details = [readTail(this.sockets.stderrFile, 10), readTail(this.sockets.consoleLog)]
      .filter(Boolean)
      .join('\n');
    return new ForkdError(code, `${message}\nconsole log: ${this.sockets.consoleLog}${details ? `\n${details}` : ''}`, {
      consoleLog: this.sockets.consoleLog,
      hint:
        hint ??
        (code === 'FORKD_ERR_BOOT_TIMEOUT'
          ? 'the guest never answered; check the console log, or try FORKD_ACCEL=tcg if KVM misbehaves'
          : 'check the QEMU error above and `forkd doctor`'),
    });
  }

  /**
   * Resolves with the promise, or rejects if QEMU exits first. A connection dropped because QEMU
   * died (the socket closes a moment before the exit is reported) is reported as the exit.
   */
  async unlessExited<T>(promise: Promise<T>, what: string): Promise<T> {
    const exitFailure = (info: ExitInfo) =>
      this.failure('FORKD_ERR_QEMU_EXITED', `QEMU exited during ${what} (${describeExit(info)})`);
    const died = this.exited.then((info) => {
      throw exitFailure(info);
    });
    died.catch(() => {});
    try {
      return await Promise.race([promise, died]);
    } catch (err) {
      const dropped =
        err instanceof ForkdError &&
        (err.code === 'FORKD_ERR_AGENT_DISCONNECTED' || err.code === 'FORKD_ERR_VM_STOPPED');
      if (dropped && (await this.waitExit(1000))) throw exitFailure(await this.exited);
      throw err;
    }
  }

  /** Waits up to `ms` for the process to exit; true if it did. */
  waitExit(ms: number): Promise<boolean> {
    return Promise.race([this.exited.then(() => true), sleep(ms).then(() => false)]);
  }

  /** Kills QEMU (if running), waits for it, removes the run dir; keeps the console log only if asked. */
  async cleanup(keepLog: boolean): Promise<ExitInfo> {
    this.handle.kill();
    const info = await this.exited;
    this.agent?.close();
    this.qmp?.close();
    rmSync(this.runDir, { recursive: true, force: true });
    if (!keepLog) rmSync(this.sockets.consoleLog, { force: true });
    this.unregisterReaper();
    this.ledger?.ended(this);
    return info;
  }

  /** Cleanup after a failed start: the error the caller throws names the console log, so keep it. */
  async discard(): Promise<void> {
    await this.cleanup(existsSync(this.sockets.consoleLog));
  }
}
