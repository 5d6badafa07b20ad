import { connect, type Socket } from 'node:net';
import { basename, dirname } from 'node:path';
import { debuglog } from '../../common/debug.js';
import { ForkdError } from '../../errors.js';
import { encodeFrame, FrameDecoder } from './frames.js';

export interface AgentReply {
  id: number | null;
  ok: boolean;
  error?: { code: string; message: string };
  [field: string]: unknown;
}

const debug = debuglog('agent');

interface Pending {
  op: string;
  sentAt: number;
  resolve: (reply: AgentReply) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout | undefined;
}

/** An agent error reply, with the agent's own code (E_NOENT, E_BAD_REQUEST, ...). */
export class AgentError extends ForkdError {
  constructor(
    readonly agentCode: string,
    message: string,
  ) {
    super('FORKD_ERR_AGENT', `${message} (${agentCode})`);
  }
}

/**
 * One connection to a guest agent (the host end of its virtio-serial port). Requests carry ids and
 * may overlap; replies with `id: null` (protocol errors) go to `onUnsolicited`.
 */
export class AgentClient {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly decoder = new FrameDecoder();
  private closedError: ForkdError | undefined;
  onUnsolicited: (reply: AgentReply) => void = () => {};

  private constructor(
    private readonly socket: Socket,
    /** The VM's id (its run dir's name), for debug lines. */
    private readonly vmId: string,
  ) {
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('close', () => {
      debug(vmId, 'connection closed (%d requests in flight)', this.pending.size);
      this.fail(this.closedError ?? new ForkdError('FORKD_ERR_AGENT_DISCONNECTED', 'agent connection closed'));
    });
    socket.on('error', () => {});
  }

  static connect(path: string): Promise<AgentClient> {
    return new Promise((resolve, reject) => {
      const socket = connect(path);
      socket.once('connect', () => {
        socket.removeListener('error', reject);
        resolve(new AgentClient(socket, basename(dirname(path))));
      });
      socket.once('error', reject);
    });
  }

  private onData(chunk: Buffer): void {
    let frames: unknown[];
    try {
      frames = this.decoder.push(chunk);
    } catch (err) {
      this.closedError = err as ForkdError;
      this.socket.destroy();
      return;
    }
    for (const frame of frames) {
      const reply = frame as AgentReply;
      const pending = typeof reply.id === 'number' ? this.pending.get(reply.id) : undefined;
      if (!pending) {
        this.onUnsolicited(reply);
        continue;
      }
      this.pending.delete(reply.id as number);
      clearTimeout(pending.timer);
      debug(
        this.vmId,
        '<- #%d %s %s (%d ms)',
        reply.id,
        pending.op,
        reply.ok ? 'ok' : (reply.error?.code ?? 'E_UNKNOWN'),
        Math.round(performance.now() - pending.sentAt),
      );
      if (reply.ok) pending.resolve(reply);
      else pending.reject(new AgentError(reply.error?.code ?? 'E_UNKNOWN', reply.error?.message ?? 'agent error'));
    }
  }

  /** Sends one request; rejects on an error reply, a disconnect, or after timeoutMs without a reply. */
  request(op: string, body: Record<string, unknown> = {}, timeoutMs?: number): Promise<AgentReply> {
    if (this.closedError || this.socket.destroyed) {
      return Promise.reject(
        this.closedError ?? new ForkdError('FORKD_ERR_AGENT_DISCONNECTED', 'agent connection closed'),
      );
    }
    const id = this.nextId++;
    const frame = encodeFrame({ ...body, id, op });
    return new Promise<AgentReply>((resolve, reject) => {
      const timer =
        timeoutMs === undefined
          ? undefined
          : setTimeout(() => {
              debug(this.vmId, '#%d %s: no reply within %d ms', id, op, timeoutMs);
              this.pending.delete(id);
              reject(new ForkdError('FORKD_ERR_AGENT_TIMEOUT', `agent did not answer "${op}" within ${timeoutMs} ms`));
            }, timeoutMs);
      this.pending.set(id, { op, sentAt: performance.now(), resolve, reject, timer });
      debug(this.vmId, '-> #%d %s (%d bytes)', id, op, frame.length);
      this.socket.write(frame);
    });
  }

  /** Writes raw bytes (tests use this to send malformed frames). */
  writeRaw(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  /** Rejects everything in flight (and every later request) with this error and closes the connection. */
  abort(error: ForkdError): void {
    this.closedError = error;
    this.fail(error);
    this.socket.destroy();
  }

  private fail(err: Error): void {
    for (const pending of this.pending.values()) {
      clearTimeout(pending.timer);
      pending.reject(err);
    }
    this.pending.clear();
  }

  close(): void {
    this.closedError ??= new ForkdError('FORKD_ERR_AGENT_DISCONNECTED', 'agent connection closed');
    this.socket.destroy();
  }

  get closed(): boolean {
    return this.closedError !== undefined || this.socket.destroyed;
  }
}
