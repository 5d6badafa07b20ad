import type { IncomingMessage } from 'node:http';
import { ForkdError } from '../errors.js';

export const JSON_BODY_LIMIT = 1024 * 1024;

/** Reads a request body up to `limit` bytes; a larger body is refused without reading it all. */
export async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > limit) throw tooLarge(limit);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw tooLarge(limit);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

function tooLarge(limit: number): ForkdError {
  return new ForkdError('FORKD_ERR_FRAME_TOO_LARGE', `request body is over the ${limit} byte limit`, {
    hint: 'send files with PUT /v1/sandboxes/:id/files, in pieces if needed',
  });
}

/** A JSON object body whose keys are all known (strict routes refuse unknown fields). */
export async function readJsonObject(
  req: IncomingMessage,
  allowed: readonly string[],
): Promise<Record<string, unknown>> {
  const raw = await readBody(req, JSON_BODY_LIMIT);
  if (raw.length === 0) return {};
  let body: unknown;
  try {
    body = JSON.parse(raw.toString('utf8'));
  } catch {
    throw new ForkdError('FORKD_ERR_BAD_INPUT', 'request body is not valid JSON');
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new ForkdError('FORKD_ERR_BAD_INPUT', 'request body must be a JSON object');
  }
  const unknown = Object.keys(body).filter((key) => !allowed.includes(key));
  if (unknown.length) {
    throw new ForkdError(
      'FORKD_ERR_BAD_INPUT',
      `unknown field${unknown.length > 1 ? 's' : ''}: ${unknown.join(', ')}`,
      {
        hint: `allowed: ${allowed.join(', ')}`,
      },
    );
  }
  return body as Record<string, unknown>;
}

type Kind = 'string' | 'integer' | 'boolean' | 'string[]' | 'object';

function matches(value: unknown, kind: Kind): boolean {
  switch (kind) {
    case 'string':
      return typeof value === 'string';
    case 'integer':
      return Number.isInteger(value);
    case 'boolean':
      return typeof value === 'boolean';
    case 'string[]':
      return Array.isArray(value) && value.every((v) => typeof v === 'string');
    case 'object':
      return (
        typeof value === 'object' &&
        value !== null &&
        !Array.isArray(value) &&
        Object.values(value).every((v) => typeof v === 'string')
      );
  }
}

/** A field of the expected type, or undefined when absent; a wrong type is a 400 naming the field. */
export function field<T>(body: Record<string, unknown>, key: string, kind: Kind): T | undefined {
  const value = body[key];
  if (value === undefined || value === null) return undefined;
  if (!matches(value, kind))
    throw new ForkdError(
      'FORKD_ERR_BAD_INPUT',
      `"${key}" must be ${kind === 'object' ? 'an object of strings' : `a ${kind}`}`,
    );
  return value as T;
}
