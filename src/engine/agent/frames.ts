import { ForkdError } from '../../errors.js';

/** Largest frame either side accepts (agent.c MAX_FRAME must match). */
export const MAX_FRAME_BYTES = 16 * 1024 * 1024;

/** A frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON. */
export function encodeFrame(message: unknown): Buffer {
  const body = Buffer.from(JSON.stringify(message), 'utf8');
  if (body.length > MAX_FRAME_BYTES) {
    throw new ForkdError(
      'FORKD_ERR_FRAME_TOO_LARGE',
      `request of ${body.length} bytes is over the ${MAX_FRAME_BYTES} byte frame limit`,
      {
        hint: 'send large files in chunks (writeFile does this for you) and cap exec stdin',
      },
    );
  }
  const header = Buffer.alloc(4);
  header.writeUInt32BE(body.length);
  return Buffer.concat([header, body]);
}

/** Splits a byte stream into frames; throws on a frame over the limit (the stream is then unusable). */
export class FrameDecoder {
  private pending: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): unknown[] {
    this.pending = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    const frames: unknown[] = [];
    while (this.pending.length >= 4) {
      const length = this.pending.readUInt32BE(0);
      if (length > MAX_FRAME_BYTES) {
        throw new ForkdError(
          'FORKD_ERR_FRAME_TOO_LARGE',
          `agent sent a frame of ${length} bytes (limit ${MAX_FRAME_BYTES})`,
        );
      }
      if (this.pending.length < 4 + length) break;
      frames.push(JSON.parse(this.pending.subarray(4, 4 + length).toString('utf8')));
      this.pending = this.pending.subarray(4 + length);
    }
    return frames;
  }

  reset(): void {
    this.pending = Buffer.alloc(0);
  }
}
