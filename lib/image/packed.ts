// The native packed message layout (lib/native.ts): per message LE int64 type, uint32 size, then the body.
import { PACKED_MESSAGE_HEADER_BYTES } from '../native';
import { IpcCkptError } from '../errors';
import type { MessageRecord } from './model';

export { PACKED_MESSAGE_HEADER_BYTES };
export const PACKED_TYPE_OFFSET = 0;
export const PACKED_SIZE_OFFSET = 8;

function malformed(problem: string): IpcCkptError {
  return new IpcCkptError('E_INTERNAL', `packed message batch: ${problem}`);
}

/** Packs messages into one buffer of the native layout (one allocation). */
export function packMessages(messages: readonly MessageRecord[]): Buffer {
  let total = 0;
  for (const message of messages) total += PACKED_MESSAGE_HEADER_BYTES + message.body.length;
  const packed = Buffer.allocUnsafe(total);
  let pos = 0;
  for (const message of messages) {
    packed.writeBigInt64LE(message.type, pos + PACKED_TYPE_OFFSET);
    packed.writeUInt32LE(message.body.length, pos + PACKED_SIZE_OFFSET);
    pos += PACKED_MESSAGE_HEADER_BYTES;
    pos += message.body.copy(packed, pos);
  }
  return packed;
}

/** Splits a packed batch into records whose bodies are views into `packed`; count must match exactly. */
export function unpackMessages(packed: Buffer, count: number): MessageRecord[] {
  const messages: MessageRecord[] = [];
  let pos = 0;
  for (let index = 0; index < count; index++) {
    if (pos + PACKED_MESSAGE_HEADER_BYTES > packed.length) throw malformed(`message ${index} at byte ${pos} has no complete header`);
    const type = packed.readBigInt64LE(pos + PACKED_TYPE_OFFSET);
    const size = packed.readUInt32LE(pos + PACKED_SIZE_OFFSET);
    const start = pos + PACKED_MESSAGE_HEADER_BYTES;
    if (size > packed.length - start) throw malformed(`message ${index} at byte ${pos} claims ${size} bytes, ${packed.length - start} remain`);
    messages.push({ type, body: packed.subarray(start, start + size) });
    pos = start + size;
  }
  if (pos !== packed.length) throw malformed(`${packed.length - pos} bytes left after ${count} messages`);
  return messages;
}

/** The size of each message in a packed batch, without copying anything. */
export function packedMessageSizes(packed: Buffer, count: number): number[] {
  const sizes: number[] = [];
  let pos = 0;
  for (let index = 0; index < count && pos + PACKED_MESSAGE_HEADER_BYTES <= packed.length; index++) {
    const size = packed.readUInt32LE(pos + PACKED_SIZE_OFFSET);
    sizes.push(size);
    pos += PACKED_MESSAGE_HEADER_BYTES + size;
  }
  return sizes;
}
