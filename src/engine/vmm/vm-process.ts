import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ForkdError, type ErrorCode } from '../../errors.js';
import { AgentClient } from '../agent/client.js';
import { which } from '../host-tools.js';
import { onProcessExit } from '../reaper.js';
import type { StatePaths } from '../state-dir.js';
import { buildQemuArgs, type VmSockets, type VmSpec } from './qemu-args.js';
import type { QemuBinary } from './qemu-binary.js';
import { QmpClient } from './qmp.js';
import { sweepStaleRunDirs } from './run-dirs.js';

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

const SOCKET_PATH_MAX = 107;
const STDERR_TAIL_BYTES = 8192;
const SOCKET_POLL_MS = 1;

function tail(text: string, lines: number): string {
  return text.trim().split('\n').slice(-lines).join('\n');
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
  private stderr = '';
  agent!: AgentClient;
  qmp!: QmpClient;

  private constructor(
    readonly id: string,
    readonly spec: VmSpec,
    readonly runDir: string,
    readonly sockets: VmSockets,
    readonly child: ChildProcess,
    readonly exited: Promise<ExitInfo>,
    private readonly unregisterReaper: () => void,
    /** performance.now() when QEMU was spawned. */
    readonly spawnedAt: number,
  ) {
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      this.stderr = (this.stderr + chunk).slice(-STDERR_TAIL_BYTES);
    });
    void exited.then((info) => (this.exitInfo = info));
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  /** Spawns QEMU and connects to its QMP and agent sockets; on any failure nothing is left behind. */
  static async launch(
    spec: VmSpec,
    paths: StatePaths,
    qemu: QemuBinary,
    deadline: number,
    /** Open file descriptors QEMU inherits as fd 3, 4, ... (e.g. device state for `fd:3`). */
    inheritFds: number[] = [],
  ): Promise<VmProcess> {
    const id = `vm-${randomBytes(5).toString('hex')}`;
    const runDir = join(paths.run(), id);
    const sockets: VmSockets = {
      qmp: join(runDir, 'qmp.sock'),
      agent: join(runDir, 'agent.sock'),
      pidFile: join(runDir, 'qemu.pid'),
      consoleLog: join(paths.logs(), `${id}.log`),
    };
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

    const args = buildQemuArgs(spec, sockets);
    // setpriv ties QEMU's life to ours: if this process dies without cleaning up, the kernel kills QEMU.
    const setpriv = which('setpriv');
    const [file, argv] = setpriv ? [setpriv, ['--pdeathsig', 'KILL', '--', qemu.path, ...args]] : [qemu.path, args];
    const spawnedAt = performance.now();
    const child = spawn(file, argv, { stdio: ['ignore', 'ignore', 'pipe', ...inheritFds] });
    const exited = new Promise<ExitInfo>((resolve) => {
      child.on('exit', (code, signal) => resolve({ code, signal }));
      child.on('error', () => resolve({ code: null, signal: null }));
    });
    const unregister = onProcessExit(() => {
      child.kill('SIGKILL');
      rmSync(runDir, { recursive: true, force: true });
    });
    const proc = new VmProcess(id, spec, runDir, sockets, child, exited, unregister, spawnedAt);
    try {
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

  /** An error that carries QEMU's stderr, the console log path and its tail. */
  failure(code: ErrorCode, message: string, hint?: string): ForkdError {
    const details = [tail(this.stderr, 10), readTail(this.sockets.consoleLog)].filter(Boolean).join('\n');
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
    this.child.kill('SIGKILL');
    const info = await this.exited;
    this.agent?.close();
    this.qmp?.close();
    rmSync(this.runDir, { recursive: true, force: true });
    if (!keepLog) rmSync(this.sockets.consoleLog, { force: true });
    this.unregisterReaper();
    return info;
  }

  /** Cleanup after a failed start: the error the caller throws names the console log, so keep it. */
  async discard(): Promise<void> {
    await this.cleanup(existsSync(this.sockets.consoleLog));
  }
}
