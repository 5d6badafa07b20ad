/**
 * A zstd stream written and read as a sequence of independent frames of bounded size.
 * @mongodb-js/zstd (the only version that installs here is 1.2.x) works on whole buffers, so
 * streaming with bounded memory means: compress at most FRAME_INPUT_BYTES per frame on the way
 * out, and on the way in cut the stream at frame boundaries (walking frame and block headers)
 * before decompressing one frame at a time. Concatenated frames are one valid .zst for any tool.
 */
import { compress, decompress } from '@mongodb-js/zstd';
import { ForkdError } from '../errors.js';

/** Uncompressed bytes per frame: memory use of either side is a small multiple of this. */
export const FRAME_INPUT_BYTES = 2 * 1024 * 1024;
/** A frame we accept when reading, compressed or not: our writer's are at most FRAME_INPUT_BYTES plus headers. */
const MAX_FRAME_BYTES = 2 * FRAME_INPUT_BYTES;
const ZSTD_MAGIC = 0xfd2fb528;
const SKIPPABLE_MASK = 0xfffffff0;
const SKIPPABLE_MAGIC = 0x184d2a50;
const BLOCK_MAX = 128 * 1024;

function corrupt(why: string): ForkdError {
  return new ForkdError('FORKD_ERR_CORRUPT', `the pack is not a valid zstd stream: ${why}`, {
    hint: 'the file is truncated or damaged; download or pack it again',
  });
}

/**
 * The length of the frame at the start of `buf`, or undefined if `buf` does not hold all of it
 * yet. Skippable frames count as frames (their payload is ignored by the reader). A frame that
 * could decompress to more than MAX_FRAME_BYTES (each block yields at most 128 KiB) is refused
 * before it is decompressed.
 */
export function frameLength(buf: Buffer): number | undefined {
  if (buf.length < 8) return undefined;
  const magic = buf.readUInt32LE(0);
  if ((magic & SKIPPABLE_MASK) >>> 0 === SKIPPABLE_MAGIC) {
    const total = 8 + buf.readUInt32LE(4);
    if (total > MAX_FRAME_BYTES) throw corrupt(`a skippable frame of ${total} bytes`);
    return buf.length >= total ? total : undefined;
  }
  if (magic !== ZSTD_MAGIC) throw corrupt(`bad frame magic 0x${magic.toString(16)}`);
  const descriptor = buf[4]!;
  const singleSegment = (descriptor >> 5) & 1;
  const checksum = (descriptor >> 2) & 1;
  const dictionaryBytes = [0, 1, 2, 4][descriptor & 3]!;
  const contentSizeBytes = [singleSegment, 2, 4, 8][descriptor >> 6]!;
  let at = 5 + (singleSegment ? 0 : 1) + dictionaryBytes + contentSizeBytes;
  let output = 0;
  for (;;) {
    if (buf.length < at + 3) return undefined;
    const header = buf.readUIntLE(at, 3);
    const [last, type, size] = [header & 1, (header >> 1) & 3, header >> 3];
    if (type === 3) throw corrupt('a reserved block type');
    if (size > BLOCK_MAX) throw corrupt(`a block of ${size} bytes`);
    at += 3 + (type === 1 ? 1 : size);
    output += type === 2 ? BLOCK_MAX : size;
    if (at > MAX_FRAME_BYTES || output > MAX_FRAME_BYTES) throw corrupt(`a frame over ${MAX_FRAME_BYTES} bytes`);
    if (last) break;
  }
  at += checksum ? 4 : 0;
  return buf.length >= at ? at : undefined;
}

/** Decompresses a stream of concatenated frames, one frame in memory at a time. */
export async function* decompressFrames(source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  let pending: Buffer = Buffer.alloc(0);
  for await (const chunk of source) {
    pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
    for (let length = frameLength(pending); length !== undefined; length = frameLength(pending)) {
      const frame = pending.subarray(0, length);
      pending = pending.subarray(length);
      if ((frame.readUInt32LE(0) & SKIPPABLE_MASK) >>> 0 === SKIPPABLE_MAGIC) continue;
      const data = await decompress(frame).catch((err: unknown) => {
        throw corrupt(err instanceof Error ? err.message : String(err));
      });
      yield data;
    }
  }
  if (pending.length) throw corrupt(`it ends inside a frame (${pending.length} bytes left over)`);
}

/**
 * Compresses a byte stream into frames of at most FRAME_INPUT_BYTES of input each, at zstd's
 * default level (3): @mongodb-js/zstd 1.2 does not pass a level on.
 */
export async function* compressFrames(source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const chunk of source) {
    for (let at = 0; at < chunk.length;) {
      const take = Math.min(chunk.length - at, FRAME_INPUT_BYTES - size);
      parts.push(chunk.subarray(at, at + take));
      size += take;
      at += take;
      if (size === FRAME_INPUT_BYTES) {
        yield await compress(Buffer.concat(parts, size));
        parts.length = 0;
        size = 0;
      }
    }
  }
  if (size) yield await compress(Buffer.concat(parts, size));
}
