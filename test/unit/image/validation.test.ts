// Structure checks of the decoder on images whose integrity record is correct, so only the checks can refuse them.
import { ImageEncoder } from '../../../lib/image/encoder';
import { decodeImageToMemory } from '../../../lib/image/decoder';
import { HeaderLayout, IntegrityLayout, IpcMsgLayout, IpcNsLayout, IpcPermsLayout, IpcSectionLayout, MsgMsgLayout, RecordType, WideMsgMsgLayout } from '../../../lib/image/layout';
import type { MessageRecord, QueueRecord } from '../../../lib/image/model';
import { GOLDEN_IMAGE, GOLDEN_MODEL, GOLDEN_OFFSETS } from './golden';
import { collectEvents, decodeError, resealed, seal } from './support';

const perms = GOLDEN_OFFSETS.queue + IpcMsgLayout.PERMS;

function queueRecord(id: number, key: number, messages: MessageRecord[] = []): QueueRecord {
  return {
    ...GOLDEN_MODEL.queues[0].queue,
    id,
    key,
    seq: id >>> 15,
    qnum: BigInt(messages.length),
    cbytes: BigInt(messages.reduce((sum, message) => sum + message.body.length, 0)),
  };
}

/** An image from raw records, sealed with a correct integrity record; queue records are not cross-checked. */
function imageOf(queues: Array<{ queue: QueueRecord; messages: MessageRecord[] }>, sectionCount = queues.length): Buffer {
  const encoder = new ImageEncoder();
  const parts = [encoder.header(GOLDEN_MODEL.header), encoder.limits(GOLDEN_MODEL.limits), encoder.msgSection(sectionCount)];
  for (const { queue, messages } of queues) {
    parts.push(encoder.queue(queue));
    for (const message of messages) parts.push(encoder.message(message));
  }
  return seal(Buffer.concat(parts));
}

async function expectRefusal(image: Buffer, message: string | RegExp, code = 'E_IMAGE_CORRUPT'): Promise<void> {
  const error = await decodeError(image);
  expect(error.code).toBe(code);
  if (typeof message === 'string') expect(error.message).toBe(message);
  else expect(error.message).toMatch(message);
}

const hello = { type: 5n, body: Buffer.from('hello') };

describe('queue checks across records', () => {
  test('queue slots must ascend', async () => {
    const image = imageOf([
      { queue: queueRecord(32770, 1), messages: [] },
      { queue: queueRecord(32769, 2), messages: [] },
    ]);
    await expectRefusal(image, `record at offset ${GOLDEN_OFFSETS.queue + IpcMsgLayout.BYTES}: queue id 32769 (slot 1) does not follow slot 2 in ascending slot order`);
  });

  test('slots, not ids, set the order: id 32769 (slot 1) comes before id 2 (slot 2)', async () => {
    const image = imageOf([
      { queue: queueRecord(32769, 1), messages: [] },
      { queue: queueRecord(2, 2), messages: [] },
    ]);
    const decoded = await decodeImageToMemory(image);
    expect(decoded.queues.map((q) => q.queue.id)).toEqual([32769, 2]);
  });

  test('a queue id may not repeat, nor two ids share a slot', async () => {
    await expectRefusal(imageOf([
      { queue: queueRecord(5, 1), messages: [] },
      { queue: queueRecord(5, 2), messages: [] },
    ]), /queue id 5 \(slot 5\) does not follow slot 5 in ascending slot order/);
    await expectRefusal(imageOf([
      { queue: queueRecord(5, 1), messages: [] },
      { queue: queueRecord(32768 + 5, 2), messages: [] },
    ]), /queue id 32773 \(slot 5\) does not follow slot 5/);
  });

  test('a non-zero key may not repeat, IPC_PRIVATE may', async () => {
    await expectRefusal(
      imageOf([
        { queue: queueRecord(1, 0xabc), messages: [] },
        { queue: queueRecord(2, 0xabc), messages: [] },
      ]),
      /queue id 2 repeats key 0xabc of an earlier queue/,
    );
    const privateKeys = imageOf([
      { queue: queueRecord(1, 0), messages: [] },
      { queue: queueRecord(2, 0), messages: [] },
    ]);
    expect((await collectEvents(privateKeys)).filter((event) => event.kind === 'queue')).toHaveLength(2);
  });

  test('fewer queues than the section claims', async () => {
    await expectRefusal(imageOf([{ queue: queueRecord(1, 1), messages: [] }], 2), /the msg section claims 2 queues, found 1 and then INTEGRITY \(9100\)/);
  });

  test('more queues than the section claims', async () => {
    await expectRefusal(
      imageOf([
        { queue: queueRecord(1, 1), messages: [] },
        { queue: queueRecord(2, 2), messages: [] },
      ], 1),
      /the msg section claims 1 queues but more follow/,
    );
  });

  test('fewer messages than q_qnum', async () => {
    const queue = { ...queueRecord(1, 1, [hello]), qnum: 2n };
    await expectRefusal(imageOf([{ queue, messages: [hello] }]), /queue id 1 claims q_qnum 2 but only 1 messages follow/);
  });

  test('more messages than q_qnum', async () => {
    const queue = queueRecord(1, 1, [hello]);
    await expectRefusal(imageOf([{ queue, messages: [hello, { type: 1n, body: Buffer.alloc(0) }] }]), /queue id 1 has more messages than its q_qnum 1/);
  });

  test('message bytes above q_cbytes', async () => {
    const queue = { ...queueRecord(1, 1, [hello]), cbytes: 4n };
    await expectRefusal(imageOf([{ queue, messages: [hello] }]), /queue id 1: message 0 brings its bytes to 5, over q_cbytes 4/);
  });

  test('message bytes below q_cbytes', async () => {
    const queue = { ...queueRecord(1, 1, [hello]), cbytes: 6n };
    await expectRefusal(imageOf([{ queue, messages: [hello] }]), /queue id 1 has q_cbytes 6 but its messages hold 5 bytes/);
  });
});

describe('field checks', () => {
  const edits: Array<[string, (body: Buffer) => void, RegExp]> = [
    ['a negative id', (b) => b.writeInt32LE(-1, perms + IpcPermsLayout.ID), /id -1 is outside 0\.\.2147483647/],
    ['seq other than id >> 15', (b) => b.writeBigUInt64LE(2n, perms + IpcPermsLayout.SEQ), /seq 2 is not id >> 15 \(1\)/],
    ['seq 65536', (b) => b.writeBigUInt64LE(65536n, perms + IpcPermsLayout.SEQ), /seq 65536 is above 65535/],
    ['uid 0xffffffff ("unchanged" to the kernel)', (b) => b.writeUInt32LE(0xffffffff, perms + IpcPermsLayout.UID), /uid 4294967295 is \(uid_t\)-1/],
    ['gid 0xffffffff', (b) => b.writeUInt32LE(0xffffffff, perms + IpcPermsLayout.GID), /gid 4294967295 is \(uid_t\)-1/],
    ['cuid 0xffffffff', (b) => b.writeUInt32LE(0xffffffff, perms + IpcPermsLayout.CUID), /cuid 4294967295 is \(uid_t\)-1/],
    ['cgid 0xffffffff', (b) => b.writeUInt32LE(0xffffffff, perms + IpcPermsLayout.CGID), /cgid 4294967295 is \(uid_t\)-1/],
    ['q_stime beyond a time64_t', (b) => b.writeBigUInt64LE(2n ** 63n, GOLDEN_OFFSETS.queue + IpcMsgLayout.Q_STIME), /q_stime 9223372036854775808 is outside/],
    ['mode beyond 0777', (b) => b.writeUInt32LE(0o1640, perms + IpcPermsLayout.MODE), /mode 01640 has bits outside 0777/],
    ['a negative lspid', (b) => b.writeInt32LE(-2, GOLDEN_OFFSETS.queue + IpcMsgLayout.Q_LSPID), /q_lspid -2 is outside/],
    ['a negative lrpid', (b) => b.writeInt32LE(-2, GOLDEN_OFFSETS.queue + IpcMsgLayout.Q_LRPID), /q_lrpid -2 is outside/],
    ['a non-zero nested perms header', (b) => b.writeUInt32LE(1, perms), /nested perms header is not zero/],
    ['non-zero perms padding', (b) => b.writeUInt32LE(1, perms + IpcPermsLayout.PADDING), /perms padding is not zero/],
    ['q_qnum beyond 2^53', (b) => b.writeBigUInt64LE(2n ** 60n, GOLDEN_OFFSETS.queue + IpcMsgLayout.Q_QNUM), /q_qnum 1152921504606846976 is outside/],
    ['m_type 0', (b) => b.writeInt32LE(0, GOLDEN_OFFSETS.message0 + MsgMsgLayout.M_TYPE), /IPC_MSG_MSG m_type 0 < 1/],
    ['a negative s32 m_type', (b) => b.writeInt32LE(-7, GOLDEN_OFFSETS.message0 + MsgMsgLayout.M_TYPE), /IPC_MSG_MSG m_type -7 < 1/],
    ['a negative s64 m_type', (b) => b.writeBigInt64LE(-(2n ** 40n), GOLDEN_OFFSETS.message1 + WideMsgMsgLayout.M_TYPE), /m_type -1099511627776 < 1/],
    ['non-zero widened padding', (b) => b.writeUInt32LE(1, GOLDEN_OFFSETS.message1 + WideMsgMsgLayout.PADDING), /IPC_MSG_MSG padding is not zero/],
    ['an IPC_MSG_MSG of 20 bytes', (b) => b.writeUInt32LE(20, GOLDEN_OFFSETS.message1 + 4), /IPC_MSG_MSG len 20, expected 16 \(v16\) or 24/],
    ['msg_ctlmni beyond IPCMNI', (b) => b.writeInt32LE(40000, GOLDEN_OFFSETS.limits + IpcNsLayout.MSG_CTLMNI), /IPC_NS msg_ctlmni 40000 is outside 0\.\.32768/],
    ['a negative msg_ctlmax', (b) => b.writeInt32LE(-1, GOLDEN_OFFSETS.limits + IpcNsLayout.MSG_CTLMAX), /IPC_NS msg_ctlmax -1/],
    ['uts_release_len 64', (b) => b.writeUInt16LE(64, HeaderLayout.UTS_RELEASE_LEN), /HEADER uts_release_len 64, expected 65/],
    ['a uts field without NUL', (b) => void b.fill(0x41, GOLDEN_OFFSETS.utsMachine + 8, GOLDEN_OFFSETS.limits), /utsname machine has no NUL terminator/],
    ['garbage after a uts NUL', (b) => void (b[GOLDEN_OFFSETS.utsVersion + 8 + 40] = 1), /utsname version has non-zero bytes after its NUL/],
    ['a uts field of invalid UTF-8', (b) => void (b[GOLDEN_OFFSETS.utsRelease + 8] = 0xff), /utsname release is not valid UTF-8/],
    ['an unknown ipc_type', (b) => b.writeUInt32LE(777, GOLDEN_OFFSETS.section + IpcSectionLayout.IPC_TYPE), /IPC ipc_type 777, expected IPC_MSG \(503\)/],
  ];
  test.each(edits)('%s is refused', async (_name, edit, pattern) => {
    const error = await decodeError(resealed(GOLDEN_IMAGE, edit));
    expect(error.code).toBe('E_IMAGE_CORRUPT');
    expect(error.message).toMatch(pattern);
    expect(error.message.startsWith(`record at offset ${error.offset}: `)).toBe(true);
  });

  test('an shm section is refused as unsupported, not as corrupt', async () => {
    const image = resealed(GOLDEN_IMAGE, (b) => b.writeUInt32LE(RecordType.IPC_SHM, GOLDEN_OFFSETS.section + IpcSectionLayout.IPC_TYPE));
    await expectRefusal(image, `record at offset ${GOLDEN_OFFSETS.section}: IPC section of IPC_SHM (502): ipc-ckpt images hold message queues only`, 'E_IMAGE_UNSUPPORTED');
  });

  test('an image without its integrity record is refused', async () => {
    const image = Buffer.concat([GOLDEN_IMAGE.subarray(0, GOLDEN_OFFSETS.integrity), GOLDEN_IMAGE.subarray(GOLDEN_OFFSETS.tail)]);
    await expectRefusal(image, `record at offset ${GOLDEN_OFFSETS.integrity}: TAIL without the integrity record (INTEGRITY (9100)) before it`);
  });

  test('an integrity record of another algorithm is refused', async () => {
    const image = Buffer.from(GOLDEN_IMAGE);
    image.writeUInt32LE(2, GOLDEN_OFFSETS.integrity + IntegrityLayout.ALGORITHM);
    await expectRefusal(image, /integrity algorithm 2, expected SHA-256 \(1\)/);
  });
});

describe('strict v16', () => {
  test('the decoder refuses a widened message record in strict mode', async () => {
    const error = await decodeError(GOLDEN_IMAGE, { strictV16: true });
    expect(error.code).toBe('E_IMAGE_UNSUPPORTED');
    expect(error.offset).toBe(GOLDEN_OFFSETS.message1);
    expect(error.message).toMatch(/widened IPC_MSG_MSG .* strictV16/);
  });

  test('the decoder accepts an image of v16 records only in strict mode', async () => {
    const image = imageOf([{ queue: queueRecord(1, 1, [hello]), messages: [hello] }]);
    const events = await collectEvents(image, { strictV16: true });
    expect(events.map((event) => event.kind)).toEqual(['header', 'limits', 'section', 'queue', 'messages', 'end']);
  });
});
