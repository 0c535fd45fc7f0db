// Hostile input: every defect is a typed IpcCkptError naming the offset and the problem; no crash, no hang, bounded memory.
import { ImageEncoder } from '../../../lib/image/encoder';
import { HeaderLayout, IpcMsgLayout, IpcSectionLayout, MsgMsgLayout, RECORD_LEN_OFFSET } from '../../../lib/image/layout';
import type { QueueRecord } from '../../../lib/image/model';
import { GOLDEN_IMAGE, GOLDEN_MODEL, GOLDEN_OFFSETS } from './golden';
import { decodeError, inChunks, resealed } from './support';

/** Fields where a flipped byte makes a valid-looking image this reader refuses as unsupported. */
const UNSUPPORTED_FIELDS: Array<[number, number]> = [
  [GOLDEN_OFFSETS.header + HeaderLayout.ARCH_ID, 2],
  [GOLDEN_OFFSETS.header + HeaderLayout.REV, 2],
  [GOLDEN_OFFSETS.section + IpcSectionLayout.IPC_TYPE, 4],
];

function inUnsupportedField(offset: number): boolean {
  return UNSUPPORTED_FIELDS.some(([start, size]) => offset >= start && offset < start + size);
}

function withUint32(image: Buffer, offset: number, value: number): Buffer {
  const copy = Buffer.from(image);
  copy.writeUInt32LE(value, offset);
  return copy;
}

/** Hundreds of decodes per test: allow for a busy shared machine. */
const EXHAUSTIVE_TIMEOUT_MS = 60_000;

describe('truncated images', () => {
  test('the golden image cut at every byte offset is a typed error naming where it ends', async () => {
    for (let length = 0; length < GOLDEN_IMAGE.length; length++) {
      const error = await decodeError(GOLDEN_IMAGE.subarray(0, length));
      expect(error.code).toBe('E_IMAGE_CORRUPT');
      expect(typeof error.offset).toBe('number');
      expect(error.offset).toBeLessThanOrEqual(length);
      expect(error.message).toMatch(new RegExp(`^record at offset ${error.offset}: image ends at offset ${length}\\b`));
    }
  }, EXHAUSTIVE_TIMEOUT_MS);

  test('a cut image fed one byte at a time fails the same way', async () => {
    for (const length of [0, 7, 100, GOLDEN_OFFSETS.message0Body + 3, GOLDEN_OFFSETS.tail + 9]) {
      const whole = await decodeError(GOLDEN_IMAGE.subarray(0, length));
      const trickled = await decodeError(inChunks(GOLDEN_IMAGE.subarray(0, length), [1]));
      expect(trickled.message).toBe(whole.message);
    }
  });
});

describe('corrupted bytes', () => {
  test('every single-byte flip of the golden image is a typed error', async () => {
    for (let offset = 0; offset < GOLDEN_IMAGE.length; offset++) {
      for (const mask of [0x01, 0x80, 0xff]) {
        const flipped = Buffer.from(GOLDEN_IMAGE);
        flipped[offset] ^= mask;
        const error = await decodeError(flipped);
        const expectedCodes = inUnsupportedField(offset) ? ['E_IMAGE_CORRUPT', 'E_IMAGE_UNSUPPORTED'] : ['E_IMAGE_CORRUPT'];
        expect(expectedCodes).toContain(error.code);
        expect(error.message.startsWith(`record at offset ${error.offset}: `)).toBe(true);
      }
    }
  }, EXHAUSTIVE_TIMEOUT_MS);

  test('a flipped message body byte is caught by the integrity record', async () => {
    const flipped = Buffer.from(GOLDEN_IMAGE);
    flipped[GOLDEN_OFFSETS.message0Body + 8] ^= 0x20;
    const error = await decodeError(flipped);
    expect(error.offset).toBe(GOLDEN_OFFSETS.integrity);
    expect(error.message).toMatch(/integrity check failed/);
  });

  test('a wrong magic number says it is not a checkpoint image', async () => {
    const error = await decodeError(withUint32(GOLDEN_IMAGE, HeaderLayout.MAGIC, 0x12345678));
    expect(error.code).toBe('E_IMAGE_CORRUPT');
    expect(error.message).toBe('record at offset 0: HEADER magic 0x00feed0c12345678, expected 0x00feed0cc0a2d200: not a checkpoint image');
  });

  test('text is not taken for an image', async () => {
    const error = await decodeError(Buffer.from('hello, this is not an image\n'));
    expect(error.message).toMatch(/^record at offset 0: expected HEADER/);
  });

  test('an image of another architecture is refused as unsupported', async () => {
    const s390 = Buffer.from(GOLDEN_IMAGE);
    s390.writeUInt16LE(3, HeaderLayout.ARCH_ID);
    const error = await decodeError(s390);
    expect(error.code).toBe('E_IMAGE_UNSUPPORTED');
    expect(error.offset).toBe(0);
    expect(error.message).toMatch(/arch_id 3 is not x86-64/);
  });

  test('a record with len < 8 names its offset, type and length', async () => {
    const error = await decodeError(withUint32(GOLDEN_IMAGE, GOLDEN_OFFSETS.message0 + RECORD_LEN_OFFSET, 7));
    expect(error.message).toBe(`record at offset ${GOLDEN_OFFSETS.message0}: IPC_MSG_MSG (504) len 7 < 8`);
    expect(error.offset).toBe(GOLDEN_OFFSETS.message0);
  });

  test('bytes after TAIL are refused', async () => {
    const error = await decodeError(Buffer.concat([GOLDEN_IMAGE, Buffer.from([0])]));
    expect(error.message).toBe(`record at offset ${GOLDEN_OFFSETS.end}: unexpected bytes after TAIL`);
  });
});

describe('counts and lengths near 2^32', () => {
  const cases: Array<[string, number, number, RegExp]> = [
    ['HEADER len', GOLDEN_OFFSETS.header + RECORD_LEN_OFFSET, 0xffffffff, /^record at offset 0: HEADER \(1\) len 4294967295, expected 48$/],
    ['a uts BUFFER claiming 4 GiB', GOLDEN_OFFSETS.utsRelease + RECORD_LEN_OFFSET, 0xffffffff, /BUFFER \(3\) len 4294967295, expected 73/],
    ['ipc_count', GOLDEN_OFFSETS.section + IpcSectionLayout.IPC_COUNT, 0xffffffff, /ipc_count 4294967295 is more queues than the kernel allows \(32768\)/],
    ['IPC_MSG len', GOLDEN_OFFSETS.queue + RECORD_LEN_OFFSET, 0xfffffff8, /IPC_MSG \(503\) len 4294967288, expected 112/],
    ['m_ts', GOLDEN_OFFSETS.message0 + MsgMsgLayout.M_TS, 0xffffffff, /IPC_MSG_MSG m_ts 4294967295 > 2147483647/],
    ['a body BUFFER claiming 4 GiB', GOLDEN_OFFSETS.message0Body + RECORD_LEN_OFFSET, 0xffffffff, /expected BUFFER len 11 .*found BUFFER len 4294967295/],
  ];
  test.each(cases)('%s is refused with a valid integrity record too', async (_name, offset, value, pattern) => {
    const error = await decodeError(resealed(GOLDEN_IMAGE, (body) => void body.writeUInt32LE(value, offset)));
    expect(error.code).toBe('E_IMAGE_CORRUPT');
    expect(error.message).toMatch(pattern);
    expect(error.message.startsWith(`record at offset ${error.offset}: `)).toBe(true);
  });

  test('q_qnum 2^32 with two messages present says how many follow', async () => {
    const image = resealed(GOLDEN_IMAGE, (body) => void body.writeBigUInt64LE(2n ** 32n, GOLDEN_OFFSETS.queue + IpcMsgLayout.Q_QNUM));
    const error = await decodeError(image);
    expect(error.message).toBe(`record at offset ${GOLDEN_OFFSETS.integrity}: queue id 32769 claims q_qnum 4294967296 but only 2 messages follow`);
  });
});

describe('memory stays bounded', () => {
  const queue: QueueRecord = { ...GOLDEN_MODEL.queues[0].queue };

  /** The golden image's records up to and including one queue record, then `messages` from a generator. */
  async function* imageWith(queueRecord: QueueRecord, messages: () => Generator<Buffer>, samples: number[]): AsyncGenerator<Buffer> {
    const encoder = new ImageEncoder();
    yield Buffer.concat([encoder.header(GOLDEN_MODEL.header), encoder.limits(GOLDEN_MODEL.limits), encoder.msgSection(1), encoder.queue(queueRecord)]);
    let count = 0;
    for (const piece of messages()) {
      if (count++ % 4096 === 0) samples.push(process.memoryUsage().arrayBuffers);
      yield piece;
    }
    samples.push(process.memoryUsage().arrayBuffers);
  }

  test('a queue claiming 2^32 messages is read as a stream and fails when they run out', async () => {
    const present = 200_000;
    const emptyMessage = new ImageEncoder().message({ type: 1n, body: Buffer.alloc(0) });
    const samples: number[] = [];
    const baseline = process.memoryUsage().arrayBuffers;
    const claim: QueueRecord = { ...queue, qnum: 2n ** 32n, cbytes: 0n };
    const error = await decodeError(
      imageWith(claim, function* () {
        for (let index = 0; index < present; index++) yield emptyMessage;
      }, samples),
      { messageBatchBytes: 64 * 1024 },
    );
    expect(error.message).toMatch(new RegExp(`image ends at offset \\d+, expected message ${present} of queue id 32769$`));
    expect(Math.max(...samples) - baseline).toBeLessThan(32 * 1024 * 1024);
  }, EXHAUSTIVE_TIMEOUT_MS);

  test('a message claiming INT_MAX bytes allocates only as its bytes arrive', async () => {
    const size = 0x7fffffff;
    const claim: QueueRecord = { ...queue, qnum: 1n, cbytes: BigInt(size) };
    const encoder = new ImageEncoder();
    const header = Buffer.alloc(MsgMsgLayout.BYTES);
    header.writeUInt32LE(504, 0);
    header.writeUInt32LE(MsgMsgLayout.BYTES, 4);
    header.writeInt32LE(1, MsgMsgLayout.M_TYPE);
    header.writeUInt32LE(size, MsgMsgLayout.M_TS);
    // 4 MiB of correct chunks (first 4048, then 4088 each), then the input ends.
    const chunks = encoder.message({ type: 1n, body: Buffer.alloc(4048 + 4088 * 1024, 0x5a) }).subarray(MsgMsgLayout.BYTES);
    const samples: number[] = [];
    const baseline = process.memoryUsage().arrayBuffers;
    const error = await decodeError(
      imageWith(claim, function* () {
        yield header;
        for (let pos = 0; pos < chunks.length; pos += 65536) yield chunks.subarray(pos, pos + 65536);
      }, samples),
    );
    expect(error.message).toMatch(/image ends at offset \d+, expected BUFFER chunk 1025 of message 0 of queue id 32769/);
    expect(Math.max(...samples) - baseline).toBeLessThan(64 * 1024 * 1024);
  }, EXHAUSTIVE_TIMEOUT_MS);
});
