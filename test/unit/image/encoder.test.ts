// The encoder's record shapes, refusals and the rollback-able digest.
import { createHash } from 'node:crypto';
import { IpcCkptError } from '../../../lib/errors';
import { ImageDigest, ImageEncoder, encodeImage } from '../../../lib/image/encoder';
import { DATALEN_MSG, DATALEN_SEG, MsgMsgLayout, RecordType, WideMsgMsgLayout, encodedBodyBytes } from '../../../lib/image/layout';
import { packMessages } from '../../../lib/image/packed';
import { GOLDEN_MODEL } from './golden';

/** The (type, len) of each record in a run of records. */
function recordList(bytes: Buffer): Array<[number, number]> {
  const records: Array<[number, number]> = [];
  for (let pos = 0; pos < bytes.length; pos += bytes.readUInt32LE(pos + 4)) records.push([bytes.readUInt32LE(pos), bytes.readUInt32LE(pos + 4)]);
  return records;
}

function thrown(action: () => unknown): IpcCkptError {
  try {
    action();
  } catch (error) {
    if (error instanceof IpcCkptError) return error;
    throw error;
  }
  throw new Error('expected a throw');
}

describe('message chunking as v16', () => {
  const cases: Array<[number, number[]]> = [
    [0, [0]],
    [1, [1]],
    [DATALEN_MSG, [DATALEN_MSG]],
    [DATALEN_MSG + 1, [DATALEN_MSG, 1]],
    [DATALEN_MSG + DATALEN_SEG, [DATALEN_MSG, DATALEN_SEG]],
    [DATALEN_MSG + 2 * DATALEN_SEG + 5, [DATALEN_MSG, DATALEN_SEG, DATALEN_SEG, 5]],
  ];
  test.each(cases)('a body of %i bytes is BUFFER chunks of %j', (size, chunks) => {
    const bytes = new ImageEncoder().message({ type: 3n, body: Buffer.alloc(size, 1) });
    expect(recordList(bytes)).toEqual([[RecordType.IPC_MSG_MSG, MsgMsgLayout.BYTES], ...chunks.map((chunk) => [RecordType.BUFFER, 8 + chunk])]);
    expect(bytes.length).toBe(MsgMsgLayout.BYTES + encodedBodyBytes(size));
  });
});

describe('message types', () => {
  test('a type that fits s32 uses the 16-byte v16 record', () => {
    const bytes = new ImageEncoder().message({ type: 0x7fffffffn, body: Buffer.alloc(0) });
    expect(bytes.readUInt32LE(4)).toBe(MsgMsgLayout.BYTES);
    expect(bytes.readInt32LE(MsgMsgLayout.M_TYPE)).toBe(0x7fffffff);
  });

  test('a type beyond s32 uses the 24-byte widened record, losslessly', () => {
    const bytes = new ImageEncoder().message({ type: 0x7fffffffffffffffn, body: Buffer.from('x') });
    expect(bytes.readUInt32LE(4)).toBe(WideMsgMsgLayout.BYTES);
    expect(bytes.readBigInt64LE(WideMsgMsgLayout.M_TYPE)).toBe(0x7fffffffffffffffn);
    expect(bytes.readUInt32LE(WideMsgMsgLayout.M_TS)).toBe(1);
  });

  test('strict v16 mode refuses a type beyond s32 instead of truncating it', () => {
    const encoder = new ImageEncoder({ strictV16: true });
    const message = { type: 0x80000000n, body: Buffer.alloc(0) };
    expect(thrown(() => encoder.message(message)).code).toBe('E_IMAGE_UNSUPPORTED');
    const fromPacked = thrown(() => encoder.messagesFromPacked(packMessages([message]), 1));
    expect(fromPacked.code).toBe('E_IMAGE_UNSUPPORTED');
    expect(fromPacked.message).toMatch(/m_type 2147483648 does not fit v16's s32 m_type/);
  });

  test('strict v16 mode writes the same bytes as the default for types that fit', () => {
    const image = { ...GOLDEN_MODEL, queues: [{ queue: { ...GOLDEN_MODEL.queues[0].queue, qnum: 1n }, messages: [GOLDEN_MODEL.queues[0].messages[0]] }] };
    expect(encodeImage(image, { strictV16: true }).equals(encodeImage(image))).toBe(true);
  });

  test.each([0n, -1n, 2n ** 63n])('type %s cannot be encoded', (type) => {
    expect(thrown(() => new ImageEncoder().message({ type, body: Buffer.alloc(0) })).message).toMatch(/m_type .* is outside 1\.\./);
  });
});

describe('refusals', () => {
  test('a header of another architecture is refused', () => {
    expect(thrown(() => new ImageEncoder().header({ ...GOLDEN_MODEL.header, archId: 1 })).code).toBe('E_IMAGE_UNSUPPORTED');
  });

  test('a utsname field longer than 64 bytes is refused', () => {
    expect(thrown(() => new ImageEncoder().header({ ...GOLDEN_MODEL.header, machine: 'm'.repeat(65) })).message).toMatch(/machine is 65 bytes/);
  });

  test('a queue breaking a field rule is refused', () => {
    const queue = GOLDEN_MODEL.queues[0].queue;
    expect(thrown(() => new ImageEncoder().queue({ ...queue, mode: 0o4777 })).message).toMatch(/mode 04777 has bits outside 0777/);
    expect(thrown(() => new ImageEncoder().queue({ ...queue, seq: 2 })).message).toMatch(/seq 2 is not id >> 15/);
  });

  test('an image whose q_qnum disagrees with its messages is refused', () => {
    const image = { ...GOLDEN_MODEL, queues: [{ ...GOLDEN_MODEL.queues[0], queue: { ...GOLDEN_MODEL.queues[0].queue, qnum: 3n } }] };
    expect(thrown(() => encodeImage(image)).message).toMatch(/q_qnum 3 but 2 messages/);
  });

  test('a malformed packed batch is refused', () => {
    const packed = packMessages([{ type: 1n, body: Buffer.from('abcd') }]);
    const encoder = new ImageEncoder();
    expect(thrown(() => encoder.messagesFromPacked(packed.subarray(0, packed.length - 1), 1)).message).toMatch(/claims 4 bytes, 3 remain/);
    expect(thrown(() => encoder.messagesFromPacked(packed, 2)).message).toMatch(/message 1 at byte 16 has no complete header/);
    expect(thrown(() => encoder.messagesFromPacked(packed, 0)).message).toMatch(/16 bytes left after 0 messages/);
  });
});

describe('ImageDigest', () => {
  test('copy() marks a point the writer can roll back to', () => {
    const digest = new ImageDigest().update(Buffer.from('header'));
    const mark = digest.copy();
    digest.update(Buffer.from('a queue copied while it changed'));
    const rolledBack = mark.copy().update(Buffer.from('the queue copied again'));
    expect(rolledBack.digest().toString('hex')).toBe(createHash('sha256').update('headerthe queue copied again').digest('hex'));
    expect(digest.digest().toString('hex')).toBe(createHash('sha256').update('headera queue copied while it changed').digest('hex'));
  });
});
