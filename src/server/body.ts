import type { IncomingMessage } from 'node:http';
import type { TSchema } from 'typebox';
import type { BodyLimit } from '../api/routes.js';
import { parseWith } from '../api/validate.js';
import { ForkdError } from '../errors.js';

export const JSON_BODY_LIMIT = 1024 * 1024;

const JSON_LIMIT: BodyLimit = {
  bytes: JSON_BODY_LIMIT,
  hint: 'send files with PUT /v1/sandboxes/:id/files, in pieces if needed',
};

/** Reads a request body up to `limit` bytes; a larger body is refused without reading it all. */
export async function readBody(req: IncomingMessage, limit: number, hint = JSON_LIMIT.hint): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > limit) throw tooLarge(limit, hint);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw tooLarge(limit, hint);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

function tooLarge(limit: number, hint: string): ForkdError {
  return new ForkdError('FORKD_ERR_FRAME_TOO_LARGE', `request body is over the ${limit} byte limit`, { hint });
}

/**
 * A JSON body that matches the route's schema (strict: unknown fields are refused); an empty body
 * is `{}`. A mismatch is a FORKD_ERR_BAD_INPUT naming the field and what it allows.
 */
export async function readJsonBody<T>(req: IncomingMessage, schema: TSchema, limit = JSON_LIMIT): Promise<T> {
  const raw = await readBody(req, limit.bytes, limit.hint);
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
