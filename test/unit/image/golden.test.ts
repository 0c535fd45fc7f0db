// The golden image: hand-written bytes that the encoder must produce exactly and the decoder must read.
import { createHash } from 'node:crypto';
import { encodeImage } from '../../../lib/image/encoder';
import { decodeImageToMemory, unpackMessages } from '../../../lib/image/decoder';
import {
  HeaderLayout,
  IntegrityLayout,
  IpcMsgLayout,
  IpcNsLayout,
  IpcPermsLayout,
  IpcSectionLayout,
  MsgMsgLayout,
  RecordType,
  TailLayout,
  WideMsgMsgLayout,
} from '../../../lib/image/layout';
import { GOLDEN_IMAGE, GOLDEN_MODEL, GOLDEN_OFFSETS } from './golden';
import { collectEvents } from './support';

describe('golden image', () => {
  test('the encoder produces exactly the hand-written bytes', () => {
    expect(encodeImage(GOLDEN_MODEL).toString('hex')).toBe(GOLDEN_IMAGE.toString('hex'));
  });

  test('the decoder reads the hand-written bytes into the model', async () => {
    expect(await decodeImageToMemory(GOLDEN_IMAGE)).toEqual(GOLDEN_MODEL);
  });

  test('the decoder reports each record at its documented offset', async () => {
    const events = await collectEvents(GOLDEN_IMAGE);
    expect(events.map((event) => [event.kind, event.offset])).toEqual([
      ['header', GOLDEN_OFFSETS.header],
      ['limits', GOLDEN_OFFSETS.limits],
      ['section', GOLDEN_OFFSETS.section],
      ['queue', GOLDEN_OFFSETS.queue],
      ['messages', GOLDEN_OFFSETS.message0],
      ['end', GOLDEN_OFFSETS.integrity],
    ]);
    const messages = events[4];
    if (messages.kind !== 'messages') throw new Error('expected messages');
    expect(messages.count).toBe(2);
    expect(unpackMessages(messages.packed, messages.count)).toEqual(GOLDEN_MODEL.queues[0].messages);
    const end = events[5];
    if (end.kind !== 'end') throw new Error('expected end');
    expect(end.imageBytes).toBe(GOLDEN_OFFSETS.end);
  });

  test('the integrity record holds the SHA-256 of every byte before it', () => {
    const digest = createHash('sha256').update(GOLDEN_IMAGE.subarray(0, GOLDEN_OFFSETS.integrity)).digest();
    const stored = GOLDEN_IMAGE.subarray(GOLDEN_OFFSETS.integrity + IntegrityLayout.DIGEST, GOLDEN_OFFSETS.tail);
    expect(stored.toString('hex')).toBe(digest.toString('hex'));
  });

  test('record sizes and field offsets agree with the layout constants', () => {
    const recordAt = (offset: number): [number, number] => [GOLDEN_IMAGE.readUInt32LE(offset), GOLDEN_IMAGE.readUInt32LE(offset + 4)];
    expect(recordAt(GOLDEN_OFFSETS.header)).toEqual([RecordType.HEADER, HeaderLayout.BYTES]);
    expect(recordAt(GOLDEN_OFFSETS.limits)).toEqual([RecordType.IPC_NS, IpcNsLayout.BYTES]);
    expect(recordAt(GOLDEN_OFFSETS.section)).toEqual([RecordType.IPC, IpcSectionLayout.BYTES]);
    expect(recordAt(GOLDEN_OFFSETS.queue)).toEqual([RecordType.IPC_MSG, IpcMsgLayout.BYTES]);
    expect(recordAt(GOLDEN_OFFSETS.message0)).toEqual([RecordType.IPC_MSG_MSG, MsgMsgLayout.BYTES]);
    expect(recordAt(GOLDEN_OFFSETS.message1)).toEqual([RecordType.IPC_MSG_MSG, WideMsgMsgLayout.BYTES]);
    expect(recordAt(GOLDEN_OFFSETS.integrity)).toEqual([RecordType.INTEGRITY, IntegrityLayout.BYTES]);
    expect(recordAt(GOLDEN_OFFSETS.tail)).toEqual([RecordType.TAIL, TailLayout.BYTES]);
    const queue = GOLDEN_OFFSETS.queue;
    expect(GOLDEN_IMAGE.readInt32LE(queue + IpcMsgLayout.PERMS + IpcPermsLayout.ID)).toBe(32769);
    expect(GOLDEN_IMAGE.readUInt32LE(queue + IpcMsgLayout.PERMS + IpcPermsLayout.MODE)).toBe(0o640);
    expect(GOLDEN_IMAGE.readBigUInt64LE(queue + IpcMsgLayout.PERMS + IpcPermsLayout.SEQ)).toBe(1n);
    expect(GOLDEN_IMAGE.readBigUInt64LE(queue + IpcMsgLayout.Q_QNUM)).toBe(2n);
    expect(GOLDEN_IMAGE.readInt32LE(queue + IpcMsgLayout.Q_LSPID)).toBe(42);
    expect(GOLDEN_IMAGE.readUInt16LE(GOLDEN_OFFSETS.header + HeaderLayout.ARCH_ID)).toBe(2);
    expect(GOLDEN_IMAGE.readBigInt64LE(GOLDEN_OFFSETS.message1 + WideMsgMsgLayout.M_TYPE)).toBe(0x100000000n);
  });
});
