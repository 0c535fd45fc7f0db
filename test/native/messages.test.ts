// Batches of messages in and out of a real queue: msgsnd of a packed batch, MSG_COPY back into one.
import { randomBytes } from 'node:crypto';
import { CopiedBatch, loadNative, NativeNamespace, PACKED_MESSAGE_HEADER_BYTES } from '../../lib/native';
import { TestNamespace } from '../support/namespace';
import { dumpNamespace, receiveMessage } from '../support/msgq-tool';
import { packBatch, TestMessage, unpackBatch } from './packed-batch';

const TYPES = [1n, 2n ** 31n, 2n ** 62n, 2n ** 63n - 1n];
const SIZES = [0, 1, 8192, 100000];
const LARGEST = Math.max(...SIZES);

function everyTypeAndSize(): TestMessage[] {
  const messages: TestMessage[] = [];
  for (const size of SIZES) for (const type of TYPES) messages.push({ type, body: randomBytes(size) });
  return messages;
}

function bodyBytes(messages: readonly TestMessage[]): number {
  return messages.reduce((sum, message) => sum + message.body.length, 0);
}

/** Copies the whole queue in batches of at most maxCount messages / maxBytes bytes. */
async function copyAll(ns: NativeNamespace, id: number, maxCount: number, maxBytes: number, bufferSize: number): Promise<CopiedBatch[]> {
  const batches: CopiedBatch[] = [];
  let first = 0;
  for (;;) {
    const batch = await ns.copyMessages(id, first, maxCount, maxBytes, bufferSize);
    batches.push(batch);
    first += batch.count;
    bufferSize = batch.bufferSize;
    if (batch.end) return batches;
  }
}

describe('native messages', () => {
  let target: TestNamespace;
  let ns: NativeNamespace;
  let id: number;
  let messages: TestMessage[];
  let packed: Buffer;

  beforeEach(async () => {
    target = await TestNamespace.create();
    ns = await loadNative().openNamespace(target.path);
    await ns.writeSysctl('msgmax', LARGEST);
    await ns.writeSysctl('msgmnb', 1 << 20);
    id = await ns.createQueue({ key: 0x4d5347, id: 32768 + 2, mode: 0o600, cuid: 0, cgid: 0 });
    messages = everyTypeAndSize();
    packed = packBatch(messages);
  });

  afterEach(async () => {
    await ns.close();
    await target.destroy();
  });

  it('sends every type and size in one batch and stat counts them', async () => {
    expect(PACKED_MESSAGE_HEADER_BYTES).toBe(12);
    expect(await ns.sendMessages(id, packed, messages.length)).toBe(messages.length);
    const stat = await ns.statQueue(id);
    expect(stat).toMatchObject({ qnum: messages.length, cbytes: bodyBytes(messages), lspid: expect.any(Number) });
    expect(stat.stime > 0n).toBe(true);

    // The oracle reads back the same types and bodies, in order.
    const [dumped] = dumpNamespace(target.path).queues;
    expect(dumped.messages.map((message) => [BigInt(message.type), message.hex])).toEqual(
      messages.map((message) => [message.type, message.body.toString('hex')]),
    );
  });

  it('copies the whole queue back byte for byte in one batch', async () => {
    await ns.sendMessages(id, packed, messages.length);
    const batch = await ns.copyMessages(id, 0, 1000, 1 << 24, LARGEST);
    expect(batch.count).toBe(messages.length);
    expect(batch.end).toBe(true);
    expect(batch.bufferSize).toBe(LARGEST);
    expect(batch.data.equals(packed)).toBe(true);
    expect(unpackBatch(batch.data, batch.count).map((message) => message.type)).toEqual(messages.map((message) => message.type));
  });

  it('grows a small starting copy buffer on E2BIG up to msgmax', async () => {
    await ns.sendMessages(id, packed, messages.length);
    const batch = await ns.copyMessages(id, 0, 1000, 1 << 24, 1);
    expect(batch.data.equals(packed)).toBe(true);
    expect(batch.bufferSize).toBe(LARGEST);

    const small = await ns.copyMessages(id, 4, 4, 1 << 24, 1);
    expect(small.bufferSize).toBeGreaterThanOrEqual(1);
    expect(small.bufferSize).toBeLessThan(LARGEST);
    expect(unpackBatch(small.data, small.count).map((message) => message.body.length)).toEqual([1, 1, 1, 1]);
  });

  it('splits the queue into batches by maxCount', async () => {
    await ns.sendMessages(id, packed, messages.length);
    const batches = await copyAll(ns, id, 3, 1 << 24, 64);
    expect(batches.map((batch) => batch.count)).toEqual([3, 3, 3, 3, 3, 1]);
    expect(batches.slice(0, -1).every((batch) => !batch.end)).toBe(true);
    expect(Buffer.concat(batches.map((batch) => batch.data)).equals(packed)).toBe(true);
  });

  it('splits the queue into batches by maxBytes, a message larger than maxBytes going alone', async () => {
    await ns.sendMessages(id, packed, messages.length);
    const maxBytes = 3 * (PACKED_MESSAGE_HEADER_BYTES + 8192);
    const batches = await copyAll(ns, id, 1000, maxBytes, 64);
    for (const batch of batches) {
      if (batch.count > 1) expect(batch.data.length).toBeLessThanOrEqual(maxBytes);
    }
    // 8 small ones fit with 2 of 8192; then 2 more of 8192; then each 100000 alone.
    expect(batches.map((batch) => batch.count)).toEqual([10, 2, 1, 1, 1, 1]);
    expect(batches[batches.length - 1].end).toBe(true);
    expect(Buffer.concat(batches.map((batch) => batch.data)).equals(packed)).toBe(true);
  });

  it('MSG_COPY leaves qnum, cbytes, rtime and lrpid as they were', async () => {
    await ns.sendMessages(id, packed, messages.length);
    const before = await ns.statQueue(id);
    const batches = await copyAll(ns, id, 5, 1 << 24, 1);
    const after = await ns.statQueue(id);
    for (const stat of [after, ...batches.flatMap((batch) => [batch.statBefore, batch.statAfter])]) {
      expect(stat).toEqual(before);
    }
    expect(before).toMatchObject({ qnum: messages.length, cbytes: bodyBytes(messages), rtime: 0n, lrpid: 0 });
  });

  it('copies an empty queue as an empty batch at its end', async () => {
    const batch = await ns.copyMessages(id, 0, 10, 1000, 64);
    expect(batch).toMatchObject({ count: 0, end: true });
    expect(batch.data.length).toBe(0);
    expect(batch.statBefore).toMatchObject({ id, qnum: 0 });
  });

  it('rejects with E2BIG and says msgmax must be raised when a message exceeds the current msgmax', async () => {
    await ns.sendMessages(id, packed, messages.length);
    await ns.writeSysctl('msgmax', 8192);
    const failure = ns.copyMessages(id, 0, 1000, 1 << 24, 64);
    await expect(failure).rejects.toMatchObject({
      code: 'E2BIG',
      errno: 7,
      syscall: 'msgrcv',
      message: expect.stringMatching(new RegExp(`message 12 of queue id ${id} .* in ${target.path}: .*msgmax \\(8192 bytes\\); msgmax must be raised`)),
    });
    // The caller raises msgmax and copies again.
    await ns.writeSysctl('msgmax', LARGEST);
    const batch = await ns.copyMessages(id, 12, 1000, 1 << 24, 8192);
    expect(batch.count).toBe(4);
    expect(batch.data.equals(packBatch(messages.slice(12)))).toBe(true);
  });

  it('sendMessages stops at a full queue and tells how many went in', async () => {
    await ns.setQueue(id, { uid: 0, gid: 0, mode: 0o600, qbytes: 100 });
    const small = [40, 40, 40].map((size, index) => ({ type: BigInt(index + 1), body: randomBytes(size) }));
    const failure = ns.sendMessages(id, packBatch(small), small.length);
    await expect(failure).rejects.toMatchObject({
      code: 'EAGAIN',
      syscall: 'msgsnd',
      sent: 2,
      message: expect.stringContaining(`msgsnd of message 2 (type 3, 40 bytes) to queue id ${id}`),
    });
    await expect(failure).rejects.toMatchObject({ message: expect.stringContaining(`in ${target.path}, after 2 sent`) });
    expect(await ns.statQueue(id)).toMatchObject({ qnum: 2, cbytes: 80 });
    // What went in is what was packed: the oracle receives message 1 (type 1) first.
    expect(receiveMessage(target.path, id, 0)).toMatchObject({ type: 1n, size: 40 });
  });

  it('rejects type 0 with the kernel EINVAL and a packed buffer that does not match its count', async () => {
    await expect(ns.sendMessages(id, packBatch([{ type: 0n, body: Buffer.alloc(1) }]), 1)).rejects.toMatchObject({
      code: 'EINVAL',
      sent: 0,
    });
    await expect(ns.sendMessages(id, packed, messages.length + 1)).rejects.toMatchObject({
      code: 'E_INTERNAL',
      message: expect.stringContaining('runs past the end'),
    });
    await expect(ns.sendMessages(id, packed.subarray(0, packed.length - 1), messages.length)).rejects.toMatchObject({ code: 'E_INTERNAL' });
    expect((await ns.statQueue(id)).qnum).toBe(0);
  });
});
