import { existsSync } from 'node:fs';
import { ForkdError, type ErrorCode } from '../../errors.js';
import type { EvalResult, ExecOptions, ExecResult } from '../../api/types.js';
import { Guest, type RestoredInfo } from '../agent/guest.js';
import { requireReadableFile } from '../host-tools.js';
import { StatePaths } from '../../common/state-dir.js';
import type { Accel, VmSockets, VmSpec } from './qemu-args.js';
import { findQemu, type QemuBinary } from './qemu-binary.js';
import type { QmpClient } from './qmp.js';
import type { PortMap } from './ports.js';
import { describeExit, VmProcess, type ExitInfo, type LaunchOptions, type VmLedgerHook } from './vm-process.js';

export interface StartVmOptions {
  kernel: string;
  initrd: string;
  rootfs?: string;
  accel: Accel;
  memoryMiB?: number;
  vcpus?: number;
  append?: string[];
  /** Guest RAM in a file (see VmSpec.memoryFile); used for parents that will be snapshotted. */
  memoryFile?: VmSpec['memoryFile'];
  /** A NIC on restricted user networking (see VmSpec.net). */
  net?: boolean;
  /** How long the guest agent may take to answer its first ping. */
  bootTimeoutMs?: number;
  paths?: StatePaths;
  qemu?: QemuBinary;
  /** Who is told of this QEMU's launch and end (the daemon's ledger), and what it is for. */
  launch?: Pick<LaunchOptions, 'ledger' | 'role' | 'snapshot'>;
}

export interface StoppedVm {
  id: string;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  /** Kept only when the VM failed; removed after a clean stop. */
  consoleLog: string | undefined;
}

const DEFAULT_BOOT_TIMEOUT_MS = 30_000;
const ADOPT_PING_TIMEOUT_MS = 5000;

/** What a forked VM's adopter must know besides its run dir: how it was started. */
export interface AdoptableVm {
  runDir: string;
  spec: VmSpec;
  readyMs: number;
  ports: PortMap;
  snapshot: string;
}

/** A running microVM: one QEMU process, its QMP socket and its guest agent. */
export class StartedVm implements AsyncDisposable {
  private stopping: Promise<StoppedVm> | undefined;
  private failed = false;
  readonly guest: Guest;

  /** Wraps a process whose guest agent is answering. `readyMs`: ms from spawning QEMU to ready (boot, or fork up to `restored`). */
  constructor(
    private readonly proc: VmProcess,
    readonly readyMs: number,
    /** Guest port -> host port on 127.0.0.1, for the ports the snapshot exposes. */
    readonly ports: PortMap = {},
    /** The snapshot this VM was forked from (undefined for a booted VM). */
    readonly snapshot?: string,
  ) {
    this.guest = new Guest(proc.agent);
    void proc.exited.then((info) => {
      if (this.stopping) return;
      this.failed = true;
      this.guest.client.abort(this.stoppedError(`exited unexpectedly (${describeExit(info)})`));
    });
  }

  get id(): string {
    return this.proc.id;
  }

  get pid(): number {
    return this.proc.pid;
  }

  /** Resolves when QEMU exits, whoever ended it. */
  get exited(): Promise<ExitInfo> {
    return this.proc.exited;
  }

  get accel(): Accel {
    return this.proc.spec.accel;
  }

  get spec(): VmSpec {
    return this.proc.spec;
  }

  get sockets(): VmSockets {
    return this.proc.sockets;
  }

  get runDir(): string {
    return this.proc.runDir;
  }

  /** True once the VM was stopped, killed or exited. */
  get stopped(): boolean {
    return this.stopping !== undefined || this.proc.exitInfo !== undefined;
  }

  get consoleLog(): string {
    return this.proc.sockets.consoleLog;
  }

  /** The last `lines` lines of the guest console: kernel messages and what the guest writes to /dev/console. */
  consoleTail(lines?: number): string {
    return this.proc.consoleTail(lines);
  }

  get qmp(): QmpClient {
    return this.proc.qmp;
  }

  /** Boots a fresh microVM and waits for its agent. */
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
      ...(options.memoryFile ? { memoryFile: options.memoryFile } : {}),
      ...(options.net ? { net: true } : {}),
    };
    const timeoutMs = options.bootTimeoutMs ?? DEFAULT_BOOT_TIMEOUT_MS;
    const deadline = Date.now() + timeoutMs;
    const proc = await VmProcess.launch(spec, paths, qemu, deadline, options.launch);
    try {
      const ping = proc.agent.request('ping', {}, Math.max(1, deadline - Date.now())).catch((err: ForkdError) => {
        throw err.code === 'FORKD_ERR_AGENT_TIMEOUT'
          ? proc.failure('FORKD_ERR_BOOT_TIMEOUT', `guest agent did not answer within ${timeoutMs} ms`)
          : err;
      });
      await proc.unlessExited(ping, 'boot');
    } catch (err) {
      await proc.discard();
      throw err;
    }
    return new StartedVm(proc, performance.now() - proc.spawnedAt);
  }

  /**
   * Takes over a forked VM that a previous forkd process left running: reconnects and waits for
   * its agent to answer. On failure the VM is killed and its files removed, and the error says why.
   */
  static async adopt(vm: AdoptableVm, paths: StatePaths, ledger?: VmLedgerHook): Promise<StartedVm> {
    const proc = await VmProcess.adopt(vm.runDir, vm.spec, paths, ledger);
    try {
      await proc.unlessExited(proc.agent.request('ping', {}, ADOPT_PING_TIMEOUT_MS), 'adoption');
    } catch (err) {
      await proc.cleanup(false);
      throw err;
    }
    return new StartedVm(proc, vm.readyMs, vm.ports, vm.snapshot);
  }

  exec(command: string | string[], options?: ExecOptions): Promise<ExecResult> {
    return this.guarded(this.guest.exec(command, options));
  }

  eval(code: string, options?: { timeoutMs?: number }): Promise<EvalResult> {
    return this.guarded(this.guest.eval(code, options));
  }

  readFile(path: string, options?: { maxBytes?: number }): Promise<Buffer> {
    return this.guarded(this.guest.readFile(path, options));
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
      if (!(await this.proc.waitExit(1000))) throw err;
      const info = await this.proc.exited;
      throw this.stoppedError(`${this.stopping ? 'was stopped' : 'exited unexpectedly'} (${describeExit(info)})`, err);
    }
  }

  /**
   * An error about this VM that carries its console tail; the console log outlives the VM (the
   * error names it).
   */
  failure(code: ErrorCode, message: string, hint: string): ForkdError {
    this.failed = true;
    return this.proc.failure(code, message, hint);
  }

  private stoppedError(what: string, cause?: unknown): ForkdError {
    const tail = this.failed ? this.consoleTail() : '';
    return new ForkdError('FORKD_ERR_VM_STOPPED', `VM ${this.id} ${what}${tail ? `\nconsole tail:\n${tail}` : ''}`, {
      hint: `see the console log ${this.consoleLog}`,
      consoleLog: this.consoleLog,
      cause,
    });
  }

  /** Drops the agent connection and makes a new one (the guest must carry on). */
  reconnectAgent(): Promise<void> {
    return this.guest.reconnect(this.sockets.agent);
  }

  /** Graceful: the guest powers off; after a grace period QEMU is asked to quit, then killed. */
  stop(graceMs = 5000): Promise<StoppedVm> {
    this.stopping ??= this.shutdown(async () => {
      await this.guest.shutdown(graceMs).catch(() => {});
      if (await this.proc.waitExit(graceMs)) return;
      await this.qmp.execute('quit').catch(() => {});
      await this.proc.waitExit(2000);
    });
    return this.stopping;
  }

  /** Forced: SIGKILL now. */
  kill(): Promise<StoppedVm> {
    this.stopping ??= this.shutdown(async () => {});
    return this.stopping;
  }

  private async shutdown(halt: () => Promise<void>): Promise<StoppedVm> {
    await halt().catch(() => {});
    this.guest.client.close();
    const { code, signal } = await this.proc.cleanup(this.failed);
    return {
      id: this.id,
      exitCode: code,
      signal,
      consoleLog: this.failed && existsSync(this.consoleLog) ? this.consoleLog : undefined,
    };
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.kill();
  }
}
