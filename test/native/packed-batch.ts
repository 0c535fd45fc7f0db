// The packed message layout of lib/native.ts, written out independently here so the native tests
// check the addon against the documented bytes, not against lib/image's own packer.
import { PACKED_MESSAGE_HEADER_BYTES } from '../../lib/native';

export interface TestMessage {
  type: bigint;
  body: Buffer;
}

/** int64 type LE, uint32 size LE, body; no padding. */
export function packBatch(messages: readonly TestMessage[]): Buffer {
  const parts: Buffer[] = [];
  for (const message of messages) {
    const header = Buffer.alloc(PACKED_MESSAGE_HEADER_BYTES);
    header.writeBigInt64LE(message.type, 0);
    header.writeUInt32LE(message.body.length, 8);
    parts.push(header, message.body);
  }
  return Buffer.concat(parts);
}

export function unpackBatch(data: Buffer, count: number): TestMessage[] {
  const messages: TestMessage[] = [];
  let offset = 0;
  for (let index = 0; index < count; index++) {
    const size = data.readUInt32LE(offset + 8);
    const start = offset + PACKED_MESSAGE_HEADER_BYTES;
    messages.push({ type: data.readBigInt64LE(offset), body: data.subarray(start, start + size) });
    offset = start + size;
  }
  expect(offset).toBe(data.length);
  return messages;
}
