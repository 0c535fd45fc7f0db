// The POSIX queue section (record types 9120-9122): round trip, placement, strict v16, and hostile input.
import { decodeImageToMemory, verifyImage } from '../../../lib/image/decoder';
import { encodeImage } from '../../../lib/image/encoder';
import { IntegrityLayout, PosixMqMsgLayout, PosixMqNsLayout, PosixMqQueueLayout, RECORD_HEADER_BYTES, RecordType, TailLayout } from '../../../lib/image/layout';
import type { Image, PosixSection } from '../../../lib/image/model';
import { GOLDEN_IMAGE, GOLDEN_MODEL } from './golden';
import { decodeError, inChunks, resealed } from './support';

const SECTION: PosixSection = {
  limits: { queuesMax: 300, msgMax: 64, msgsizeMax: 16384, msgDefault: 7, msgsizeDefault: 1000 },
  queues: [
    { queue: { name: 'a', mode: 0o600, uid: 0, gid: 0, maxmsg: 4, msgsize: 16, curmsgs: 0, qsize: 0 }, messages: [] },
    {
      queue: { name: 'bé queue', mode: 0o640, uid: 1234, gid: 5678, maxmsg: 10, msgsize: 8, curmsgs: 3, qsize: 9 },
      messages: [
        { priority: 32767, body: Buffer.from('12345678') },
        { priority: 5, body: Buffer.alloc(0) },
        { priority: 5, body: Buffer.from('z') },
      ],
    },
  ],
};

const IMAGE: Image = { ...GOLDEN_MODEL, posix: SECTION };
const BYTES = encodeImage(IMAGE);
/** Where the POSIX section starts: right after the golden image's v16 records. */
const SECTION_AT = GOLDEN_IMAGE.length - IntegrityLayout.BYTES - TailLayout.BYTES;
const QUEUE_A_AT = SECTION_AT + PosixMqNsLayout.BYTES;
const QUEUE_B_AT = QUEUE_A_AT + PosixMqQueueLayout.BYTES + RECORD_HEADER_BYTES + 1;
const MESSAGE_0_AT = QUEUE_B_AT + PosixMqQueueLayout.BYTES + RECORD_HEADER_BYTES + Buffer.byteLength('bé queue');
const MESSAGE_1_AT = MESSAGE_0_AT + PosixMqMsgLayout.BYTES + RECORD_HEADER_BYTES + 8;
const MESSAGE_2_AT = MESSAGE_1_AT + PosixMqMsgLayout.BYTES + RECORD_HEADER_BYTES;

test('an image with POSIX queues decodes to what was encoded, in chunks of any size', async () => {
  expect(await decodeImageToMemory(BYTES)).toEqual(IMAGE);
  for (const sizes of [[1], [3, 7], [4096]]) {
    const chunks: Buffer[] = [];
    for await (const chunk of inChunks(BYTES, sizes)) chunks.push(chunk);
    expect(await decodeImageToMemory(Buffer.concat(chunks))).toEqual(IMAGE);
  }
  const summary = await verifyImage(BYTES);
  expect(summary.posix?.queues.map((q) => [q.queue.name, q.offset])).toEqual([['a', QUEUE_A_AT], ['bé queue', QUEUE_B_AT]]);
});

test('the section sits after the v16 records and before INTEGRITY, byte by byte as docs/FORMAT.md says', () => {
  expect(BYTES.subarray(0, SECTION_AT).equals(GOLDEN_IMAGE.subarray(0, SECTION_AT))).toBe(true);
  expect(BYTES.readUInt32LE(SECTION_AT)).toBe(RecordType.POSIX_MQ_NS);
  expect(BYTES.readUInt32LE(SECTION_AT + 4)).toBe(32);
  expect([8, 12, 16, 20, 24, 28].map((o) => BYTES.readUInt32LE(SECTION_AT + o))).toEqual([300, 64, 16384, 7, 1000, 2]);
  expect(BYTES.readUInt32LE(QUEUE_B_AT)).toBe(RecordType.POSIX_MQ_QUEUE);
  expect(BYTES.readUInt32LE(QUEUE_B_AT + 4)).toBe(56);
  expect([8, 12, 16, 20].map((o) => BYTES.readUInt32LE(QUEUE_B_AT + o))).toEqual([Buffer.byteLength('bé queue'), 0o640, 1234, 5678]);
  expect([24, 32, 40, 48].map((o) => BYTES.readBigUInt64LE(QUEUE_B_AT + o))).toEqual([10n, 8n, 3n, 9n]);
  expect(BYTES.readUInt32LE(QUEUE_B_AT + 56)).toBe(RecordType.BUFFER);
  expect(BYTES.subarray(QUEUE_B_AT + 64, MESSAGE_0_AT).toString()).toBe('bé queue');
  expect([0, 4, 8, 12, 16, 20].map((o) => BYTES.readUInt32LE(MESSAGE_0_AT + o))).toEqual([RecordType.POSIX_MQ_MSG, 16, 32767, 8, RecordType.BUFFER, 16]);
  expect(BYTES.readUInt32LE(MESSAGE_1_AT + 20)).toBe(RECORD_HEADER_BYTES);
  expect(BYTES.readUInt32LE(BYTES.length - IntegrityLayout.BYTES - TailLayout.BYTES)).toBe(RecordType.INTEGRITY);
});

test('an image without the section reads exactly as before; strict v16 refuses the section on both sides', async () => {
  expect(await decodeImageToMemory(GOLDEN_IMAGE)).toEqual(GOLDEN_MODEL);
  expect('posix' in (await decodeImageToMemory(GOLDEN_IMAGE))).toBe(false);
  // Without SysV queues (the golden ones include a widened message, which strict v16 refuses first).
  const noSysv = { ...GOLDEN_MODEL, queues: [] };
  const strict = await decodeError(encodeImage({ ...noSysv, posix: SECTION }), { strictV16: true });
  expect(strict.code).toBe('E_IMAGE_UNSUPPORTED');
  expect(strict.offset).toBe(encodeImage(noSysv).length - IntegrityLayout.BYTES - TailLayout.BYTES);
  expect(strict.message).toMatch(/POSIX_MQ_NS \(9120\) is an ipc-ckpt extension/);
  expect(() => encodeImage(IMAGE, { strictV16: true })).toThrow(/strict v16/);
});

test('the section cut at every byte offset is a typed error naming where it ends', async () => {
  for (let length = SECTION_AT; length < BYTES.length; length++) {
    const error = await decodeError(BYTES.subarray(0, length));
    expect(error.code).toBe('E_IMAGE_CORRUPT');
    expect(error.message).toMatch(new RegExp(`image ends at offset ${length}\\b`));
  }
});

/** [what, edit of the body, the error's offset, its message] for defects the integrity record cannot catch. */
const DEFECTS: Array<[string, (b: Buffer) => void, number, RegExp]> = [
  ['msg_max above the kernel bound', (b) => b.writeUInt32LE(65537, SECTION_AT + PosixMqNsLayout.MSG_MAX), SECTION_AT, /msg_max 65537 is not in 1\.\.65536/],
  ['more queues claimed than present', (b) => b.writeUInt32LE(3, SECTION_AT + PosixMqNsLayout.QUEUE_COUNT), BYTES.length - 64, /claims 3 queues, found 2 and then INTEGRITY/],
  ['a huge queue count', (b) => b.writeUInt32LE(0xffffffff, SECTION_AT + PosixMqNsLayout.QUEUE_COUNT), SECTION_AT, /queue count 4294967295/],
  ['an empty name', (b) => b.writeUInt32LE(0, QUEUE_A_AT + PosixMqQueueLayout.NAME_LEN), QUEUE_A_AT, /name_len 0 is not 1\.\.255/],
  ['a name longer than NAME_MAX', (b) => b.writeUInt32LE(256, QUEUE_A_AT + PosixMqQueueLayout.NAME_LEN), QUEUE_A_AT, /name_len 256/],
  ['a name with a slash', (b) => b.write('/', QUEUE_A_AT + PosixMqQueueLayout.BYTES + RECORD_HEADER_BYTES), QUEUE_A_AT, /contains '\/'/],
  ['names out of order', (b) => b.write('c', QUEUE_A_AT + PosixMqQueueLayout.BYTES + RECORD_HEADER_BYTES), QUEUE_B_AT, /does not follow '\/c'/],
  ['mode beyond 07777', (b) => b.writeUInt32LE(0o10000, QUEUE_A_AT + PosixMqQueueLayout.MODE), QUEUE_A_AT, /mode 010000/],
  ['curmsgs above maxmsg', (b) => b.writeBigUInt64LE(11n, QUEUE_B_AT + PosixMqQueueLayout.CURMSGS), QUEUE_B_AT, /curmsgs 11 is not in 0\.\.maxmsg 10/],
  ['a maxmsg beyond 2^31', (b) => b.writeBigUInt64LE(1n << 40n, QUEUE_B_AT + PosixMqQueueLayout.MAXMSG), QUEUE_B_AT, /maxmsg 1099511627776/],
  ['a priority of MQ_PRIO_MAX', (b) => b.writeUInt32LE(32768, MESSAGE_0_AT + PosixMqMsgLayout.PRIORITY), MESSAGE_0_AT, /priority 32768 is not in 0\.\.32767/],
  ['priorities out of delivery order', (b) => b.writeUInt32LE(6, MESSAGE_2_AT + PosixMqMsgLayout.PRIORITY), MESSAGE_2_AT, /priority 6 after 5: not in delivery order/],
  ['a message above msgsize', (b) => b.writeUInt32LE(9, MESSAGE_0_AT + PosixMqMsgLayout.SIZE), MESSAGE_0_AT, /size 9 is above the queue's msgsize 8/],
  ['a body BUFFER of another length', (b) => b.writeUInt32LE(RECORD_HEADER_BYTES + 7, MESSAGE_0_AT + PosixMqMsgLayout.BYTES + 4), MESSAGE_0_AT + PosixMqMsgLayout.BYTES, /expected BUFFER len 16/],
  ['another record in place of a message', (b) => b.writeUInt32LE(RecordType.IPC_MSG_MSG, MESSAGE_1_AT), MESSAGE_1_AT, /claims 3 messages, found 1 and then IPC_MSG_MSG/],
  ['qsize that the messages do not reach', (b) => b.writeBigUInt64LE(8n, QUEUE_B_AT + PosixMqQueueLayout.QSIZE), MESSAGE_1_AT + PosixMqMsgLayout.BYTES + RECORD_HEADER_BYTES, /brings its bytes to 9, over qsize 8|qsize 8/],
  ['a record len that lies', (b) => b.writeUInt32LE(3, QUEUE_A_AT + 4), QUEUE_A_AT, /len 3 < 8/],
];

test.each(DEFECTS)('a resealed image with %s is a typed E_IMAGE_CORRUPT at the defect', async (_what, edit, offset, message) => {
  const error = await decodeError(resealed(BYTES, edit));
  expect(error.code).toBe('E_IMAGE_CORRUPT');
  expect(error.message).toMatch(message);
  expect(error.offset).toBe(offset);
});

test('random byte flips in the section are typed errors, never a crash or a hang', async () => {
  let state = 12345;
  for (let run = 0; run < 300; run++) {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    const at = SECTION_AT + (state % (BYTES.length - IntegrityLayout.BYTES - TailLayout.BYTES - SECTION_AT));
    const edited = resealed(BYTES, (b) => {
      b[at] ^= 1 << (state >>> 29);
    });
    try {
      await decodeImageToMemory(edited);
    } catch (error) {
      expect((error as { code: string }).code).toMatch(/^E_IMAGE_(CORRUPT|UNSUPPORTED)$/);
    }
  }
});
