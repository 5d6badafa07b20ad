import { connect, type Socket } from 'node:net';
import { ForkdError } from '../../errors.js';

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

  private constructor(private readonly socket: Socket) {
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
    const client = new QmpClient(socket);
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
      const message = JSON.parse(line) as { QMP?: unknown; id?: number; return?: unknown; error?: { desc: string } };
      if (message.QMP) this.greetingResolve();
      if (typeof message.id !== 'number') continue;
      const pending = this.pending.get(message.id);
      this.pending.delete(message.id);
      if (message.error) pending?.reject(new ForkdError('FORKD_ERR_QEMU_EXITED', `QMP: ${message.error.desc}`));
      else pending?.resolve(message.return);
    }
  }

  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.closed) return Promise.reject(new ForkdError('FORKD_ERR_VM_STOPPED', `QMP ${command}: connection closed`));
    const id = this.nextId++;
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
