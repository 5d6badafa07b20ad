import type { IncomingMessage } from 'node:http';
import type { TSchema } from 'typebox';
import { parseWith } from '../api/validate.js';
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

/**
 * A JSON body that matches the route's schema (strict: unknown fields are refused); an empty body
 * is `{}`. A mismatch is a FORKD_ERR_BAD_INPUT naming the field and what it allows.
 */
export async function readJsonBody<T>(req: IncomingMessage, schema: TSchema): Promise<T> {
  const raw = await readBody(req, JSON_BODY_LIMIT);
  let body: unknown = {};
  if (raw.length > 0) {
    try {
      body = JSON.parse(raw.toString('utf8'));
    } catch {
      throw new ForkdError('FORKD_ERR_BAD_INPUT', 'request body is not valid JSON', {
        hint: 'send a JSON object with content-type: application/json',
      });
    }
  }
  return parseWith<T>(schema, body, 'the body');
}
