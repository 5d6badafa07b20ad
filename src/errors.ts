/**
 * Every error forkd raises on purpose: a stable `code` to match on, a message that says what
 * happened, and a `hint` that says how to fix it. Match on `code`, not on the class or message.
 */
export type ErrorCode =
  | 'FORKD_ERR_BAD_INPUT'
  | 'FORKD_ERR_NOT_FOUND'
  | 'FORKD_ERR_QEMU_MISSING'
  | 'FORKD_ERR_QEMU_EXITED'
  | 'FORKD_ERR_BOOT_TIMEOUT'
  | 'FORKD_ERR_AGENT'
  | 'FORKD_ERR_AGENT_TIMEOUT'
  | 'FORKD_ERR_NO_EVAL'
  | 'FORKD_ERR_EVAL_TIMEOUT'
  | 'FORKD_ERR_AGENT_DISCONNECTED'
  | 'FORKD_ERR_FRAME_TOO_LARGE'
  | 'FORKD_ERR_VM_STOPPED'
  | 'FORKD_ERR_BUILD'
  | 'FORKD_ERR_CONFLICT'
  | 'FORKD_ERR_CORRUPT'
  | 'FORKD_ERR_INCOMPATIBLE'
  | 'FORKD_ERR_SNAPSHOT'
  | 'FORKD_ERR_LIMIT'
  | 'FORKD_ERR_BUSY'
  | 'FORKD_ERR_UNAUTHORIZED'
  | 'FORKD_ERR_UNREACHABLE'
  | 'FORKD_ERR_INTERNAL';

const brand = Symbol.for('forkd.error');

export class ForkdError extends Error {
  readonly code: ErrorCode;
  readonly hint: string | undefined;
  /** The failing VM's serial console log, when one is kept for this error. */
  readonly consoleLog: string | undefined;
  /** The HTTP status, for errors that came from (or go out through) the daemon's API. */
  readonly status: number | undefined;
  readonly [brand] = true;

  constructor(
    code: ErrorCode,
    message: string,
    options: { hint?: string; cause?: unknown; consoleLog?: string; status?: number } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ForkdError';
    this.code = code;
    this.hint = options.hint;
    this.consoleLog = options.consoleLog;
    this.status = options.status;
  }

  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[brand] === true;
  }

  /** One line for humans: the message, then the hint. */
  describe(): string {
    return this.hint ? `${this.message}\n  hint: ${this.hint}` : this.message;
  }

  toJSON(): { code: ErrorCode; error: string; hint?: string; consoleLog?: string } {
    return {
      code: this.code,
      error: this.message,
      ...(this.hint ? { hint: this.hint } : {}),
      ...(this.consoleLog ? { consoleLog: this.consoleLog } : {}),
    };
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
