import { connect, type Socket } from 'node:net';
import { basename, dirname } from 'node:path';
import { debuglog } from '../../common/debug.js';
import { ForkdError } from '../../errors.js';

const debug = debuglog('qmp');
/** How much of a malformed line an error quotes. */
const QUOTED_LINE_CHARS = 200;

interface QmpMessage {
  QMP?: unknown;
  id?: number;
  return?: unknown;
  error?: { desc: string };
  event?: string;
  data?: unknown;
}

interface Pending {
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
}

/** A QEMU Machine Protocol client over a Unix socket: newline-delimited JSON, one command at a time per id. */
export class QmpClient {
  private buffer = '';
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private closed = false;
  /** Why the VM was failed (a malformed line): what every later command is rejected with. */
  private failure: ForkdError | undefined;

  private constructor(
    private readonly socket: Socket,
    /** The VM's id (its run dir's name), for debug lines. */
    private readonly vmId: string,
  ) {
    socket.setEncoding('utf8');
    this.greeting.catch(() => {}); // a close after connect() returned is not an error for anyone
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('close', () => {
      const err = new ForkdError('FORKD_ERR_VM_STOPPED', 'QMP connection closed');
      this.greetingReject(err);
      this.failAll(err);
    });
    socket.on('error', () => {});
  }

  /** Connects and negotiates capabilities. */
  static async connect(path: string): Promise<QmpClient> {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = connect(path);
      s.once('connect', () => resolve(s));
      s.once('error', reject);
    });
    const client = new QmpClient(socket, basename(dirname(path)));
    try {
      await client.greeting;
      await client.execute('qmp_capabilities');
    } catch (err) {
      client.close();
      throw err;
    }
    return client;
  }

  private greetingResolve!: () => void;
  private greetingReject!: (err: Error) => void;
  private readonly greeting = new Promise<void>((resolve, reject) => {
    this.greetingResolve = resolve;
    this.greetingReject = reject;
  });

  private onData(chunk: string): void {
    this.buffer += chunk;
    let newline: number;
    while ((newline = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, newline).trim();
      this.buffer = this.buffer.slice(newline + 1);
      if (!line) continue;
      const message = parseMessage(line);
      if (!message) {
        this.failMalformed(line);
        return;
      }
      if (message.QMP) this.greetingResolve();
      if (message.event) debug(this.vmId, 'event %s %j', message.event, message.data ?? {});
      if (typeof message.id !== 'number') continue;
      const pending = this.pending.get(message.id);
      this.pending.delete(message.id);
      if (message.error) {
        debug(this.vmId, '<- #%d error: %s', message.id, message.error.desc);
        pending?.reject(new ForkdError('FORKD_ERR_QEMU_EXITED', `QMP: ${message.error.desc}`));
      } else {
        debug(this.vmId, '<- #%d ok', message.id);
        pending?.resolve(message.return);
      }
    }
  }

  /**
   * QEMU sent something that is not a QMP message: nothing it says can be trusted any more, so the
   * VM is failed (every command in flight and later rejected, the monitor closed) instead of
   * letting the parse error escape the socket handler and take the process down.
   */
  private failMalformed(line: string): void {
    const quoted = line.length > QUOTED_LINE_CHARS ? `${line.slice(0, QUOTED_LINE_CHARS)}…` : line;
    debug(this.vmId, 'malformed line: %s', quoted);
    const err = new ForkdError('FORKD_ERR_VM_STOPPED', `QMP sent a malformed line, so the VM is failed: ${quoted}`, {
      hint: 'QEMU misbehaved or its monitor socket was tampered with; remove this VM and fork again',
    });
    this.failure = err;
    this.greetingReject(err);
    this.failAll(err);
    this.buffer = '';
    this.socket.destroy();
  }

  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.closed) {
      return Promise.reject(
        this.failure ?? new ForkdError('FORKD_ERR_VM_STOPPED', `QMP ${command}: connection closed`),
      );
    }
    const id = this.nextId++;
    debug(this.vmId, '-> #%d %s %j', id, command, args ?? {});
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.socket.write(`${JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}), id })}\n`);
    });
  }

  private failAll(err: Error): void {
    this.closed = true;
    for (const pending of this.pending.values()) pending.reject(err);
    this.pending.clear();
  }

  close(): void {
    this.closed = true;
    this.socket.destroy();
  }
}

/** A QMP message (a JSON object), or undefined for anything else. */
function parseMessage(line: string): QmpMessage | undefined {
  try {
    const message: unknown = JSON.parse(line);
    return typeof message === 'object' && message !== null && !Array.isArray(message)
      ? (message as QmpMessage)
      : undefined;
  } catch {
    return undefined;
  }
}
