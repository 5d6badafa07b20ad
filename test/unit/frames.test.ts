import { describe, expect, test } from 'vitest';
import { encodeFrame, FrameDecoder, MAX_FRAME_BYTES } from '../../src/engine/agent/frames.js';

describe('frames', () => {
  test('encodes a 4-byte big-endian length and UTF-8 JSON', () => {
    const frame = encodeFrame({ op: 'ping', id: 1, s: 'é' });
    const body = '{"op":"ping","id":1,"s":"é"}';
    expect(frame.readUInt32BE(0)).toBe(Buffer.byteLength(body));
    expect(frame.subarray(4).toString()).toBe(body);
  });

  test('decodes frames split and joined at any byte', () => {
    const bytes = Buffer.concat([
      encodeFrame({ a: 1 }),
      encodeFrame({ b: [2, 3] }),
      encodeFrame({ c: 'x'.repeat(1000) }),
    ]);
    for (const step of [1, 3, 7, 64, bytes.length]) {
      const decoder = new FrameDecoder();
      const frames: unknown[] = [];
      for (let i = 0; i < bytes.length; i += step) frames.push(...decoder.push(bytes.subarray(i, i + step)));
      expect(frames).toEqual([{ a: 1 }, { b: [2, 3] }, { c: 'x'.repeat(1000) }]);
    }
  });

  test('refuses to encode a frame over the limit', () => {
    expect(() => encodeFrame({ data: 'x'.repeat(MAX_FRAME_BYTES) })).toThrow(
      expect.objectContaining({ code: 'FORKD_ERR_FRAME_TOO_LARGE' }),
    );
  });

  test('throws on an incoming frame over the limit instead of buffering it', () => {
    const header = Buffer.alloc(4);
    header.writeUInt32BE(MAX_FRAME_BYTES + 1);
    expect(() => new FrameDecoder().push(header)).toThrow(
      expect.objectContaining({ code: 'FORKD_ERR_FRAME_TOO_LARGE' }),
    );
  });
});
