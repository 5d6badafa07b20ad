import { CommanderError } from 'commander';
import { ForkdError, errorMessage } from '../errors.js';

/**
 * What a failed command tells its user: a ForkdError as it is, a usage error as bad input, and
 * anything else as what it is, a bug in forkd (FORKD_ERR_INTERNAL), never the user's fault.
 */
export function commandError(err: unknown): ForkdError {
  if (err instanceof ForkdError) return err;
  if (err instanceof CommanderError) return new ForkdError('FORKD_ERR_BAD_INPUT', err.message, { cause: err });
  return new ForkdError('FORKD_ERR_INTERNAL', `unexpected error: ${errorMessage(err)}`, {
    hint: 'this is a bug in forkd: run the command again with FORKD_DEBUG=all (the stack and the VMs’ debug lines go to stderr) and report what it prints',
    cause: err,
  });
}

/** The stack of an unexpected error, printed when FORKD_DEBUG is set (the hint asks for it). */
export function debugStack(error: ForkdError): string | undefined {
  if (error.code !== 'FORKD_ERR_INTERNAL' || !process.env.FORKD_DEBUG) return undefined;
  return error.cause instanceof Error ? error.cause.stack : undefined;
}
