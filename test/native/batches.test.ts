// The batch calls: many queues created, copied or sent to in one crossing, with exact per-queue results.
import { randomBytes } from 'node:crypto';
import { COPIED_PART_FIELDS, CopiedQueues, loadNative, NativeNamespace, NewQueueRequest, packNewQueues, QUEUE_STAT_DOUBLES, unpackQueueStat } from '../../lib/native';
import { TestNamespace } from '../support/namespace';
import { dumpNamespace, msgqTool } from '../support/msgq-tool';
import { packBatch, TestMessage, unpackBatch } from './packed-batch';

const IDS_PER_SEQ = 32768;

function request(id: number, key: number, extra: Partial<NewQueueRequest> = {}): NewQueueRequest {
  return { key, id, mode: 0o640, cuid: 0, cgid: 0, uid: 0, gid: 0, qbytes: 4096, ...extra };
}

/** copyQueues requests, packed (COPY_REQUEST_FIELDS). */
function copyRequests(...queues: Array<{ id: number; maxCount: number; maxBytes: number; bufferSize: number; statBefore?: boolean }>): Float64Array {
  return Float64Array.from(queues.flatMap((q) => [q.id, q.maxCount, q.maxBytes, q.bufferSize, q.statBefore === false ? 0 : 1]));
}

function messages(count: number, size: number, firstType = 1): TestMessage[] {
  return Array.from({ length: count }, (_, i) => ({ type: BigInt(firstType + i), body: randomBytes(size) }));
}

/** Queue k of a copyQueues batch, read out of its packed arrays. */
function part(copied: CopiedQueues, k: number) {
  const [offset, length, count, end, bufferSize] = copied.parts.subarray(k * COPIED_PART_FIELDS.length, (k + 1) * COPIED_PART_FIELDS.length);
  const error = copied.errors.find((e) => e.index === k);
  return {
    offset,
    length,
    count,
    end: end === 1,
    bufferSize,
    error,
    statBefore: error ? undefined : unpackQueueStat(copied.statsBefore, k),
    statAfter: error ? undefined : unpackQueueStat(copied.statsAfter, k),
    messages: unpackBatch(copied.data.subarray(offset, offset + length), count),
  };
}

describe('native batches', () => {
  let target: TestNamespace;
  let ns: NativeNamespace;

  beforeEach(async () => {
    target = await TestNamespace.create();
    ns = await loadNative().openNamespace(target.path);
  });

  afterEach(async () => {
    await ns.close();
    await target.destroy();
  });

  describe('createQueues', () => {
    it('makes every queue at its id with its key, creator, owner, mode and qbytes', async () => {
      const requests = [
        request(7, 0x1001, { cuid: 1234, cgid: 5678, uid: 42, gid: 43, mode: 0o604, qbytes: 1000 }),
        request(3 * IDS_PER_SEQ + 5, 0x1002),
        request(2 * IDS_PER_SEQ + 9, 0, { cuid: 77, cgid: 0, uid: 78, gid: 79 }),
      ];
      const result = await ns.createQueues(packNewQueues(requests));
      expect(result).toEqual({ created: requests.map((r) => r.id) });
      const dumped = dumpNamespace(target.path).queues;
      expect(dumped.map((q) => q.id).sort((a, b) => a - b)).toEqual(requests.map((r) => r.id).sort((a, b) => a - b));
      for (const r of requests) {
        expect(dumped.find((q) => q.id === r.id)).toMatchObject({ key: r.key, cuid: r.cuid, cgid: r.cgid, uid: r.uid, gid: r.gid, mode: r.mode, qbytes: r.qbytes });
      }
    });

    it('a queue msgget already makes as asked (owner = creator, qbytes = msgmnb) is as exact as one that needs IPC_SET', async () => {
      const { msgmnb } = dumpNamespace(target.path).limits;
      const requests = [
        request(60, 0x1101, { qbytes: msgmnb }),
        request(61, 0x1102, { cuid: 1234, cgid: 5678, uid: 1234, gid: 5678, mode: 0o600, qbytes: msgmnb }),
        request(62, 0x1103, { cuid: 1234, cgid: 5678, uid: 1234, gid: 5678, qbytes: msgmnb - 1 }),
        request(63, 0x1104, { cuid: 1234, cgid: 5678, uid: 1234, gid: 99, qbytes: msgmnb }),
        request(64, 0x1105, { cuid: 1234, cgid: 5678, uid: 99, gid: 5678, mode: 0o777, qbytes: msgmnb }),
      ];
      expect(await ns.createQueues(packNewQueues(requests))).toEqual({ created: requests.map((r) => r.id) });
      const dumped = dumpNamespace(target.path).queues;
      for (const r of requests) {
        expect(dumped.find((q) => q.id === r.id)).toMatchObject({ key: r.key, cuid: r.cuid, cgid: r.cgid, uid: r.uid, gid: r.gid, mode: r.mode, qbytes: r.qbytes });
      }
    });

    it('stops at a key that exists: the queues before it are made and reported, nothing of it or after it', async () => {
      msgqTool(target.path, 'create', '0x2002', '600');
      const result = await ns.createQueues(packNewQueues([request(10, 0x2001), request(11, 0x2002), request(12, 0x2003)]));
      expect(result.created).toEqual([10]);
      expect(result.failure).toMatchObject({ index: 1, queueCreated: false, code: 'EEXIST', syscall: 'msgget', message: expect.stringContaining('key 0x2002 at id 11') });
      const keys = dumpNamespace(target.path).queues.map((q) => q.key).sort((a, b) => a - b);
      expect(keys).toEqual([0x2001, 0x2002]);
    });

    it('reports a taken slot as E_ID_MISMATCH and removes the queue the kernel made elsewhere', async () => {
      const intruder = Number(msgqTool(target.path, 'create', '0x6666', '600', '--id', 21).trim());
      const result = await ns.createQueues(packNewQueues([request(20, 0x3001), request(21, 0x3002), request(22, 0x3003)]));
      expect(result.created).toEqual([20]);
      expect(result.failure).toMatchObject({ index: 1, queueCreated: false, code: 'E_ID_MISMATCH' });
      const now = dumpNamespace(target.path).queues.map((q) => [q.id, q.key]).sort((a, b) => a[0] - b[0]);
      expect(now).toEqual([[20, 0x3001], [intruder, 0x6666]]);
    });

    it('counts a queue whose IPC_SET failed as made: it exists and is in created', async () => {
      const msgmnb = Number(msgqTool(target.path, 'sysctl', 'msgmnb').trim());
      // qbytes above msgmnb needs CAP_SYS_RESOURCE, which the test's root lacks.
      const result = await ns.createQueues(packNewQueues([request(30, 0x4001), request(31, 0x4002, { qbytes: msgmnb + 1 }), request(32, 0x4003)]));
      expect(result.created).toEqual([30, 31]);
      expect(result.failure).toMatchObject({ index: 1, queueCreated: true, code: 'EPERM', syscall: 'msgctl' });
      expect(dumpNamespace(target.path).queues.map((q) => q.id).sort((a, b) => a - b)).toEqual([30, 31]);
    });

    it('leaves msg_next_id unset after a failed msgget', async () => {
      msgqTool(target.path, 'create', '0x5002', '600');
      const result = await ns.createQueues(packNewQueues([request(40, 0x5002)]));
      expect(result).toMatchObject({ created: [], failure: { index: 0, code: 'EEXIST' } });
      expect(Number(msgqTool(target.path, 'sysctl', 'msg_next_id').trim())).toBe(-1);
    });

    it('rejects a malformed request before any system call', async () => {
      await expect(ns.createQueues(packNewQueues([request(50, 0x6001), { ...request(51, 0x6002), mode: 0o1000 }]))).rejects.toMatchObject({ code: 'E_INTERNAL', message: expect.stringContaining('requests[1].mode') });
      expect(dumpNamespace(target.path).queues).toEqual([]);
    });
  });

  describe('copyQueues', () => {
    it('stats and copies several queues in one call, each part at its offset, ENOMSG after the last message', async () => {
      const ids = (await ns.createQueues(packNewQueues([request(1, 0x7001, { qbytes: 16384 }), request(2, 0x7002), request(3, 0x7003, { qbytes: 16384 })]))).created;
      const sent = [messages(5, 100), [], messages(3, 2000, 10)];
      await ns.sendQueueMessages([ids[0], ids[2]], [5, 3], Buffer.concat([packBatch(sent[0]), packBatch(sent[2])]));
      const copied = await ns.copyQueues(copyRequests(...ids.map((id) => ({ id, maxCount: 100, maxBytes: 1 << 20, bufferSize: 64 }))));
      expect(copied.statsBefore).toHaveLength(3 * QUEUE_STAT_DOUBLES);
      expect(copied.errors).toEqual([]);
      for (let k = 0; k < 3; k++) {
        const queue = part(copied, k);
        expect(queue).toMatchObject({ count: sent[k].length, end: true });
        // The packed stat is the queue's whole stat, field for field.
        expect(queue.statBefore).toEqual(await ns.statQueue(ids[k]));
        expect(queue.statAfter).toEqual(queue.statBefore);
        expect(queue.messages).toEqual(sent[k]);
      }
      // MSG_COPY leaves the queues as they were.
      expect((await ns.statQueue(ids[0])).qnum).toBe(5);
    });

    it('stops a queue at maxCount without its end, and grows the copy buffer per queue', async () => {
      const [id] = (await ns.createQueues(packNewQueues([request(4, 0x7004, { qbytes: 16384 })]))).created;
      const sent = messages(4, 3000);
      await ns.sendMessages(id, packBatch(sent), sent.length);
      const queue = part(await ns.copyQueues(copyRequests({ id, maxCount: 2, maxBytes: 1 << 20, bufferSize: 64 })), 0);
      expect(queue).toMatchObject({ count: 2, end: false });
      expect(queue.bufferSize).toBeGreaterThanOrEqual(3000);
    });

    it('skips the stat before a queue whose request says statBefore 0 (the caller\'s listing stands in): its statsBefore are zeros', async () => {
      const ids = (await ns.createQueues(packNewQueues([request(7, 0x7007, { qbytes: 16384 }), request(8, 0x7008)]))).created;
      const sent = messages(3, 40);
      await ns.sendMessages(ids[0], packBatch(sent), sent.length);
      const copied = await ns.copyQueues(copyRequests({ id: ids[0], maxCount: 3, maxBytes: 1 << 20, bufferSize: 64, statBefore: false }, { id: ids[1], maxCount: 0, maxBytes: 1, bufferSize: 64 }));
      expect(copied.errors).toEqual([]);
      expect(Array.from(copied.statsBefore.subarray(0, QUEUE_STAT_DOUBLES))).toEqual(new Array(QUEUE_STAT_DOUBLES).fill(0));
      const first = part(copied, 0);
      expect(first).toMatchObject({ count: 3, end: false, messages: sent });
      expect(first.statAfter).toEqual(await ns.statQueue(ids[0]));
      // maxCount 0: no MSG_COPY at all, the stats on both sides.
      const second = part(copied, 1);
      expect(second).toMatchObject({ count: 0, length: 0, end: false });
      expect(second.statBefore).toEqual(await ns.statQueue(ids[1]));
      expect(second.statAfter).toEqual(second.statBefore);
    });

    it('rejects requests that are not whole numbers in range, before any copy', async () => {
      await expect(ns.copyQueues(Float64Array.from([1, 1, 0, 64, 1]))).rejects.toMatchObject({ code: 'E_INTERNAL', message: expect.stringContaining('requests[0].maxBytes') });
      await expect(ns.copyQueues(Float64Array.from([1, 1, 1, 64, 2]))).rejects.toMatchObject({ code: 'E_INTERNAL', message: expect.stringContaining('requests[0].statBefore') });
      await expect(ns.copyQueues(Float64Array.from([1, 1, 1, 64]))).rejects.toMatchObject({ code: 'E_INTERNAL' });
    });

    it('reports a queue that does not exist or holds a message above msgmax, and goes on with the next', async () => {
      const ids = (await ns.createQueues(packNewQueues([request(5, 0x7005, { qbytes: 16384 }), request(6, 0x7006)]))).created;
      const big = messages(1, 8000);
      const small = messages(2, 10);
      await ns.sendMessages(ids[0], packBatch(big), 1);
      await ns.sendMessages(ids[1], packBatch(small), 2);
      msgqTool(target.path, 'sysctl', 'msgmax', 4096);
      const copied = await ns.copyQueues(
        copyRequests({ id: ids[0], maxCount: 10, maxBytes: 1 << 20, bufferSize: 64 }, { id: 999, maxCount: 10, maxBytes: 1 << 20, bufferSize: 64 }, { id: ids[1], maxCount: 10, maxBytes: 1 << 20, bufferSize: 64 }),
      );
      expect(copied.errors.map((e) => e.index)).toEqual([0, 1]);
      expect(part(copied, 0)).toMatchObject({ count: 0, length: 0, error: { code: 'E2BIG', syscall: 'msgrcv' } });
      expect(part(copied, 1)).toMatchObject({ count: 0, length: 0, error: { code: 'EINVAL', syscall: 'msgctl' } });
      expect(part(copied, 2)).toMatchObject({ count: 2, end: true, error: undefined, messages: small });
    });
  });

  describe('listQueueStats', () => {
    it('packs the same stats listQueues returns, in the same order', async () => {
      await ns.createQueues(packNewQueues([request(3, 0x9003, { cuid: 5, cgid: 6, uid: 7, gid: 8 }), request(IDS_PER_SEQ + 1, 0xfffffffe)]));
      await ns.sendMessages(3, packBatch(messages(2, 33)), 2);
      const listed = await ns.listQueues();
      const packed = await ns.listQueueStats();
      expect(packed).toHaveLength(listed.length * QUEUE_STAT_DOUBLES);
      expect(listed.map((_, k) => unpackQueueStat(packed, k))).toEqual(listed);
    });
  });

  describe('sendQueueMessages', () => {
    it('sends each run of one packed buffer to its queue, in order', async () => {
      const ids = (await ns.createQueues(packNewQueues([request(1, 0x8001), request(2, 0x8002)]))).created;
      const runs = [messages(3, 50), messages(2, 70, 5)];
      const sent = await ns.sendQueueMessages(ids, [3, 2], Buffer.concat(runs.map(packBatch)));
      expect(sent).toBe(5);
      const dumped = dumpNamespace(target.path).queues;
      expect(dumped.find((q) => q.id === ids[0])).toMatchObject({ qnum: 3, cbytes: 150 });
      expect(dumped.find((q) => q.id === ids[1])).toMatchObject({ qnum: 2, cbytes: 140 });
    });

    it('stops at a full queue and says how many went in, in all, and at which queue', async () => {
      const ids = (await ns.createQueues(packNewQueues([request(1, 0x8101), request(2, 0x8102, { qbytes: 100 })]))).created;
      const runs = [messages(2, 40), messages(3, 40, 3)];
      await expect(ns.sendQueueMessages(ids, [2, 3], Buffer.concat(runs.map(packBatch)))).rejects.toMatchObject({ code: 'EAGAIN', syscall: 'msgsnd', sent: 4, queueIndex: 1 });
      expect(await ns.statQueue(ids[1])).toMatchObject({ qnum: 2, cbytes: 80 });
    });

    it('rejects counts that do not match the packed buffer', async () => {
      const ids = (await ns.createQueues(packNewQueues([request(1, 0x8201)]))).created;
      await expect(ns.sendQueueMessages(ids, [3], packBatch(messages(2, 10)))).rejects.toMatchObject({ code: 'E_INTERNAL' });
      await expect(ns.sendQueueMessages(ids, [1, 1], packBatch(messages(2, 10)))).rejects.toMatchObject({ code: 'E_INTERNAL', message: expect.stringContaining('differ in length') });
    });
  });
});
