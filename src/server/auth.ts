import { randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { ForkdError } from '../errors.js';

export const MIN_TOKEN_BYTES = 16;
const PLACEHOLDER = /^(replace[-_ ]?me|change[-_ ]?me|changeme|token|secret|password|example|test|x+|0+)$/i;

/** A usable bearer token: at least 16 bytes and not a placeholder someone forgot to replace. */
export function validateToken(token: string, source: string): string {
  const trimmed = token.trim();
  const hint = `put at least ${MIN_TOKEN_BYTES} random bytes in ${source} (or delete it and forkd serve generates one)`;
  if (Buffer.byteLength(trimmed) < MIN_TOKEN_BYTES) {
    throw new ForkdError('FORKD_ERR_BAD_INPUT', `the token in ${source} is shorter than ${MIN_TOKEN_BYTES} bytes`, {
      hint,
    });
  }
  if (PLACEHOLDER.test(trimmed) || /^(REPLACE_ME|CHANGE_ME)/i.test(trimmed)) {
    throw new ForkdError('FORKD_ERR_BAD_INPUT', `the token in ${source} looks like a placeholder`, { hint });
  }
  return trimmed;
}

/** Reads the token file, or creates it (mode 0600) with 32 random bytes when it does not exist. */
export function loadOrCreateToken(file: string): string {
  try {
    writeFileSync(file, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600, flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  return validateToken(readFileSync(file, 'utf8'), file);
}

/** Constant-time comparison that does not leak the expected token's length either. */
export function tokenMatches(presented: string, expected: string): boolean {
  const want = Buffer.from(expected);
  const got = Buffer.alloc(want.length);
  const raw = Buffer.from(presented);
  raw.copy(got, 0, 0, Math.min(raw.length, want.length));
  return timingSafeEqual(got, want) && raw.length === want.length;
}

/** Only `/healthz` itself is open: no subpaths, no query string, no encoded tricks. */
export function isHealthz(rawUrl: string | undefined): boolean {
  return rawUrl === '/healthz' || rawUrl === '/healthz/';
}

/**
 * Checks an Authorization header; returns the failure message or undefined when authorised. The
 * scheme is case-insensitive (RFC 7235: `bearer TOKEN` is the same as `Bearer TOKEN`).
 */
export function authFailure(header: string | undefined, token: string): string | undefined {
  const scheme = /^bearer +/i.exec(header ?? '');
  if (!scheme) return 'missing bearer token';
  const presented = header!.slice(scheme[0].length).trim();
  if (!presented) return 'missing bearer token';
  return tokenMatches(presented, token) ? undefined : 'invalid bearer token';
}
