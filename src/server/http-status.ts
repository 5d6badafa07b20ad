import type { ErrorCode } from '../errors.js';

const STATUS: Partial<Record<ErrorCode, number>> = {
  FORKD_ERR_BAD_INPUT: 400,
  FORKD_ERR_LIMIT: 400,
  FORKD_ERR_FRAME_TOO_LARGE: 413,
  FORKD_ERR_UNAUTHORIZED: 401,
  FORKD_ERR_NOT_FOUND: 404,
  FORKD_ERR_CONFLICT: 409,
  FORKD_ERR_CORRUPT: 409,
  FORKD_ERR_INCOMPATIBLE: 409,
  FORKD_ERR_VM_STOPPED: 410,
  FORKD_ERR_BUSY: 503,
  FORKD_ERR_AGENT: 422,
  FORKD_ERR_NO_EVAL: 422,
  FORKD_ERR_EVAL_TIMEOUT: 504,
};

/** The HTTP status an engine error maps to; anything unexpected is a 500. */
export function httpStatus(code: ErrorCode): number {
  return STATUS[code] ?? 500;
}
