import { randomBytes } from 'node:crypto';
import { constants } from 'node:os';
import { FILE_BODY_LIMIT, MAX_OUTPUT_BYTES } from '../../api/schemas.js';
import type { EvalResult, ExecOptions, ExecResult } from '../../api/types.js';
import { execRequest, execResult } from '../../api/wire.js';
import { ForkdError } from '../../errors.js';
import { AgentClient, AgentError, type AgentReply } from './client.js';

export interface RestoredInfo {
  timeMs?: number;
  entropy?: Buffer;
  hostname?: string;
}

/** Raw bytes per read_file/write_file request: base64 keeps a chunk well under the frame limit. */
const FILE_CHUNK = 4 * 1024 * 1024;
/** Host-side slack on top of an exec's own timeout, for the reply to arrive. */
const EXEC_REPLY_GRACE_MS = 5000;
const CONTROL_TIMEOUT_MS = 30_000;
const DEFAULT_EVAL_TIMEOUT_MS = 60_000;
/** The agent's eval relay exits with this when no interpreter listens in the guest (agent.c EVAL_NO_SERVER). */
const EVAL_NO_SERVER = 3;

const signalNames = new Map<number, NodeJS.Signals>(
  Object.entries(constants.signals).map(([name, number]) => [number, name as NodeJS.Signals]),
);

/** Typed operations on a guest agent, over a connection that can be dropped and re-made. */
export class Guest {
  constructor(public client: AgentClient) {}

  async reconnect(socketPath: string): Promise<void> {
    this.client.close();
    this.client = await AgentClient.connect(socketPath);
  }

  async ping(timeoutMs = CONTROL_TIMEOUT_MS): Promise<{ version: string; uptimeMs: number; jobs: number }> {
    const reply = await this.client.request('ping', {}, timeoutMs);
    return { version: String(reply.version), uptimeMs: Number(reply.uptime_ms), jobs: Number(reply.jobs) };
  }

  async exec(command: string | string[], options: ExecOptions = {}): Promise<ExecResult> {
    if (Array.isArray(command) && command.length === 0) {
      throw new ForkdError('FORKD_ERR_BAD_INPUT', 'exec needs a command', {
        hint: 'pass argv like ["ls", "-l"] or a shell string',
      });
    }
    const reply = await this.client.request(
      'exec',
      execRequest(command, options),
      options.timeoutMs === undefined ? undefined : options.timeoutMs + EXEC_REPLY_GRACE_MS,
    );
    return parseExecReply(reply);
  }

  /**
   * Runs code in the guest's warm interpreter (a recipe's eval bridge on /run/forkd/eval.sock),
   * relayed by the agent: no interpreter starts per call.
   */
  async eval(code: string, options: { timeoutMs?: number } = {}): Promise<EvalResult> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_EVAL_TIMEOUT_MS;
    const reply = await this.client.request(
      'eval',
      { stdin: Buffer.from(code).toString('base64'), timeout_ms: timeoutMs, max_output: MAX_OUTPUT_BYTES },
      timeoutMs + EXEC_REPLY_GRACE_MS,
    );
    return parseEvalReply(parseExecReply(reply), timeoutMs);
  }

  /**
   * The whole file; one longer than `maxBytes` (default 64 MiB) is refused with FORKD_ERR_LIMIT
   * before it is buffered: the agent stops at the limit, which also bounds endless files such as
   * /dev/zero.
   */
  async readFile(path: string, options: { maxBytes?: number } = {}): Promise<Buffer> {
    const maxBytes = options.maxBytes ?? FILE_BODY_LIMIT;
    const chunks: Buffer[] = [];
    for (let offset = 0; ;) {
      const reply = await this.client
        .request('read_file', { path, offset, length: FILE_CHUNK, max_bytes: maxBytes }, CONTROL_TIMEOUT_MS)
        .catch((err: unknown) => {
          throw err instanceof AgentError && err.agentCode === 'E_TOO_LARGE' ? readLimitError(path, maxBytes) : err;
        });
      const chunk = Buffer.from(String(reply.data), 'base64');
      offset += chunk.length;
      // checked here too: an agent in a snapshot taken before max_bytes existed ignores it
      if (offset > maxBytes) throw readLimitError(path, maxBytes);
      chunks.push(chunk);
      if (reply.eof === true) return Buffer.concat(chunks);
    }
  }

  async writeFile(path: string, data: string | Buffer, options: { mode?: number } = {}): Promise<void> {
    const bytes = Buffer.from(data);
    let offset = 0;
    do {
      const chunk = bytes.subarray(offset, offset + FILE_CHUNK);
      await this.client.request(
        'write_file',
        { path, data: chunk.toString('base64'), mode: options.mode ?? 0o644, append: offset > 0 },
        CONTROL_TIMEOUT_MS,
      );
      offset += chunk.length;
    } while (offset < bytes.length);
  }

  /** Tells a restored guest the real time, fresh entropy and its own identity. */
  async restored(info: RestoredInfo = {}): Promise<void> {
    await this.client.request(
      'restored',
      {
        time_ms: info.timeMs ?? Date.now(),
        entropy: (info.entropy ?? randomBytes(64)).toString('base64'),
        ...(info.hostname ? { hostname: info.hostname } : {}),
      },
      CONTROL_TIMEOUT_MS,
    );
  }

  /** Asks the guest to sync and power off; resolves when the agent has acknowledged. */
  async shutdown(timeoutMs = 5000): Promise<void> {
    await this.client.request('shutdown', {}, timeoutMs);
  }
}

function readLimitError(path: string, maxBytes: number): ForkdError {
  return new ForkdError('FORKD_ERR_LIMIT', `${path} is longer than the read limit of ${maxBytes} bytes`, {
    hint: `raise the limit (maxBytes; max_bytes= over the API, up to ${FILE_BODY_LIMIT}) or read a part with exec, e.g. head -c N ${path}`,
    status: 413,
  });
}

/** The agent answers exec as the REST API does, except that it numbers the signal. */
export function parseExecReply(reply: AgentReply): ExecResult {
  const signal = typeof reply.signal === 'number' ? (signalNames.get(reply.signal) ?? null) : null;
  return execResult({ ...reply, signal });
}

function parseEvalReply(relay: ExecResult, timeoutMs: number): EvalResult {
  const stderr = relay.stderr.toString().trim();
  if (relay.timedOut) {
    throw new ForkdError('FORKD_ERR_EVAL_TIMEOUT', `eval did not answer within ${timeoutMs} ms`, {
      hint: 'pass a longer timeout; the interpreter keeps running the code and answers the next eval once it is done',
    });
  }
  if (relay.exitCode === EVAL_NO_SERVER) {
    throw new ForkdError('FORKD_ERR_NO_EVAL', `this sandbox has no eval bridge: ${stderr}`, {
      hint: 'fork from a recipe with one, e.g. forkd snapshot --tag py --recipe python-numpy (or nodejs)',
    });
  }
  let reply: Record<string, unknown>;
  try {
    if (relay.exitCode !== 0 || relay.stdoutTruncated) throw new Error(stderr || 'reply too large');
    reply = JSON.parse(relay.stdout.toString()) as Record<string, unknown>;
  } catch (err) {
    throw new ForkdError(
      'FORKD_ERR_AGENT',
      `the eval bridge failed (exit ${relay.exitCode}): ${(err as Error).message}`,
      {
        hint: 'the guest interpreter may have crashed; see /tmp/eval-server.log in the sandbox',
      },
    );
  }
  const output = String(reply.output ?? '');
  if (reply.ok === true) {
    return {
      ok: true,
      value: reply.value ?? null,
      repr: typeof reply.repr === 'string' ? reply.repr : null,
      output,
      durationMs: relay.durationMs,
    };
  }
  const error = (reply.error ?? {}) as Record<string, unknown>;
  return {
    ok: false,
    error: {
      type: String(error.type ?? 'Error'),
      message: String(error.message ?? ''),
      stack: String(error.stack ?? ''),
    },
    output,
    durationMs: relay.durationMs,
  };
}
