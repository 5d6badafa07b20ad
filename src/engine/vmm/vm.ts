import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ForkdError } from '../../errors.js';
import { AgentClient } from '../agent/client.js';
import { Guest, type ExecOptions, type ExecResult, type RestoredInfo } from '../agent/guest.js';
import { which } from '../host-tools.js';
import { requireReadableFile } from '../images/base.js';
import { onProcessExit } from '../reaper.js';
import { StatePaths } from '../state-dir.js';
import { buildQemuArgs, type Accel, type VmSockets, type VmSpec } from './qemu-args.js';
import { findQemu, type QemuBinary } from './qemu-binary.js';
import { QmpClient } from './qmp.js';
import { sweepStaleRunDirs } from './run-dirs.js';

export interface StartVmOptions {
  kernel: string;
  initrd: string;
  rootfs?: string;
  accel: Accel;
  memoryMiB?: number;
  vcpus?: number;
  append?: string[];
  /** How long the guest agent may take to answer its first ping. */
  bootTimeoutMs?: number;
  paths?: StatePaths;
  qemu?: QemuBinary;
}

export interface StoppedVm {
  id: string;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  /** Kept only when the VM failed; removed after a clean stop. */
  consoleLog: string | undefined;
}

const DEFAULT_BOOT_TIMEOUT_MS = 30_000;
const SOCKET_PATH_MAX = 107;
const STDERR_TAIL_BYTES = 8192;

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

/** A running microVM: one QEMU process, its QMP socket and its guest agent. */
export class StartedVm implements AsyncDisposable {
  private stopping: Promise<StoppedVm> | undefined;
  private failed = false;

  private constructor(
    readonly id: string,
    readonly accel: Accel,
    private readonly process: ChildProcess,
    private readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>,
    private readonly runDir: string,
    readonly sockets: VmSockets,
    readonly guest: Guest,
    readonly qmp: QmpClient,
    /** Wall-clock ms from spawning QEMU to the agent's first answer. */
    readonly bootMs: number,
    private readonly unregisterReaper: () => void,
  ) {
    exited.then(({ code, signal }) => {
      if (this.stopping) return;
      this.failed = true;
      guest.client.abort(
        'FORKD_ERR_VM_STOPPED',
        `VM ${id} exited unexpectedly (${signal ?? `code ${code}`})`,
        `see the console log ${sockets.consoleLog}`,
      );
    });
  }

  get pid(): number {
    return this.process.pid ?? -1;
  }

  get consoleLog(): string {
    return this.sockets.consoleLog;
  }

  static async start(options: StartVmOptions): Promise<StartedVm> {
    const paths = options.paths ?? new StatePaths();
    const qemu = options.qemu ?? (await findQemu());
    const hint = 'run `forkd build base`, or check the path you passed';
    const spec: VmSpec = {
      kernel: requireReadableFile(options.kernel, 'kernel', hint),
      initrd: requireReadableFile(options.initrd, 'initramfs', hint),
      ...(options.rootfs ? { rootfs: requireReadableFile(options.rootfs, 'rootfs image', hint) } : {}),
      accel: options.accel,
      memoryMiB: options.memoryMiB ?? 256,
      vcpus: options.vcpus ?? 1,
      ...(options.append ? { append: options.append } : {}),
    };
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

    const args = buildQemuArgs(spec, sockets);
    // setpriv ties QEMU's life to ours: if this process dies without cleaning up, the kernel kills QEMU.
    const setpriv = which('setpriv');
    const [file, argv] = setpriv ? [setpriv, ['--pdeathsig', 'KILL', '--', qemu.path, ...args]] : [qemu.path, args];
    const started = performance.now();
    const child = spawn(file, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      stderr = (stderr + chunk).slice(-STDERR_TAIL_BYTES);
    });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
      child.on('exit', (code, signal) => resolve({ code, signal }));
      child.on('error', () => resolve({ code: null, signal: null }));
    });
    const unregisterReaper = onProcessExit(() => {
      child.kill('SIGKILL');
      rmSync(runDir, { recursive: true, force: true });
    });
    let exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    void exited.then((info) => (exitInfo = info));

    const failure = (code: 'FORKD_ERR_QEMU_EXITED' | 'FORKD_ERR_BOOT_TIMEOUT', message: string) => {
      const details = [tail(stderr, 10), readTail(sockets.consoleLog)].filter(Boolean).join('\n');
      return new ForkdError(code, `${message}\nconsole log: ${sockets.consoleLog}${details ? `\n${details}` : ''}`, {
        hint:
          code === 'FORKD_ERR_BOOT_TIMEOUT'
            ? 'the guest never answered; check the console log, or try FORKD_ACCEL=tcg if KVM misbehaves'
            : 'check the QEMU error above and `forkd doctor`',
      });
    };
    const deadline = Date.now() + (options.bootTimeoutMs ?? DEFAULT_BOOT_TIMEOUT_MS);
    const connectWhenListening = async <T>(connect: () => Promise<T>): Promise<T> => {
      for (;;) {
        if (exitInfo)
          throw failure(
            'FORKD_ERR_QEMU_EXITED',
            `QEMU exited during start (${exitInfo.signal ?? `code ${exitInfo.code}`})`,
          );
        if (Date.now() > deadline) throw failure('FORKD_ERR_BOOT_TIMEOUT', `QEMU did not open its sockets in time`);
        try {
          return await connect();
        } catch {
          await sleep(2);
        }
      }
    };

    let agent: AgentClient | undefined;
    let qmp: QmpClient | undefined;
    try {
      [agent, qmp] = await Promise.all([
        connectWhenListening(() => AgentClient.connect(sockets.agent)),
        connectWhenListening(() => QmpClient.connect(sockets.qmp)),
      ]);
      const remaining = Math.max(1, deadline - Date.now());
      const ping = agent.request('ping', {}, remaining).catch((err: ForkdError) => {
        if (err.code === 'FORKD_ERR_AGENT_TIMEOUT') {
          throw failure(
            'FORKD_ERR_BOOT_TIMEOUT',
            `guest agent did not answer within ${options.bootTimeoutMs ?? DEFAULT_BOOT_TIMEOUT_MS} ms`,
          );
        }
        throw err;
      });
      const died = exited.then((info) => {
        throw failure('FORKD_ERR_QEMU_EXITED', `QEMU exited during boot (${info.signal ?? `code ${info.code}`})`);
      });
      await Promise.race([ping, died]);
      died.catch(() => {});
    } catch (err) {
      agent?.close();
      qmp?.close();
      child.kill('SIGKILL');
      await exited;
      rmSync(runDir, { recursive: true, force: true });
      unregisterReaper();
      throw err;
    }
    return new StartedVm(
      id,
      spec.accel,
      child,
      exited,
      runDir,
      sockets,
      new Guest(agent),
      qmp,
      performance.now() - started,
      unregisterReaper,
    );
  }

  exec(command: string | string[], options?: ExecOptions): Promise<ExecResult> {
    return this.guarded(this.guest.exec(command, options));
  }

  readFile(path: string): Promise<Buffer> {
    return this.guarded(this.guest.readFile(path));
  }

  writeFile(path: string, data: string | Buffer, options?: { mode?: number }): Promise<void> {
    return this.guarded(this.guest.writeFile(path, data, options));
  }

  restored(info?: RestoredInfo): Promise<void> {
    return this.guarded(this.guest.restored(info));
  }

  /**
   * The agent socket closes a moment before QEMU's exit is reported: a dropped connection
   * caused by the VM dying is reported as the VM stopping, with its console log.
   */
  private async guarded<T>(request: Promise<T>): Promise<T> {
    try {
      return await request;
    } catch (err) {
      if (!(err instanceof ForkdError) || err.code !== 'FORKD_ERR_AGENT_DISCONNECTED') throw err;
      const died = await Promise.race([this.exited.then(() => true), sleep(1000).then(() => false)]);
      if (!died) throw err;
      const { code, signal } = await this.exited;
      throw new ForkdError(
        'FORKD_ERR_VM_STOPPED',
        `VM ${this.id} ${this.stopping ? 'was stopped' : 'exited unexpectedly'} (${signal ?? `code ${code}`})`,
        {
          hint: `see the console log ${this.sockets.consoleLog}`,
          cause: err,
        },
      );
    }
  }

  /** Drops the agent connection and makes a new one (the guest must carry on). */
  reconnectAgent(): Promise<void> {
    return this.guest.reconnect(this.sockets.agent);
  }

  /** Graceful: the guest powers off; after a grace period QEMU is asked to quit, then killed. */
  stop(graceMs = 5000): Promise<StoppedVm> {
    this.stopping ??= this.shutdown(async () => {
      await this.guest.shutdown(graceMs).catch(() => {});
      if (await this.waitExit(graceMs)) return;
      await this.qmp.execute('quit').catch(() => {});
      if (await this.waitExit(2000)) return;
      this.process.kill('SIGKILL');
    });
    return this.stopping;
  }

  /** Forced: SIGKILL now. */
  kill(): Promise<StoppedVm> {
    this.stopping ??= this.shutdown(async () => {
      this.process.kill('SIGKILL');
    });
    return this.stopping;
  }

  private async waitExit(ms: number): Promise<boolean> {
    const timeout = sleep(ms).then(() => false);
    return Promise.race([this.exited.then(() => true), timeout]);
  }

  private async shutdown(halt: () => Promise<void>): Promise<StoppedVm> {
    try {
      await halt();
    } catch {
      this.process.kill('SIGKILL');
    }
    const { code, signal } = await this.exited;
    this.guest.client.close();
    this.qmp.close();
    rmSync(this.runDir, { recursive: true, force: true });
    if (!this.failed) rmSync(this.sockets.consoleLog, { force: true });
    this.unregisterReaper();
    return {
      id: this.id,
      exitCode: code,
      signal,
      consoleLog: this.failed && existsSync(this.sockets.consoleLog) ? this.sockets.consoleLog : undefined,
    };
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.kill();
  }
}
