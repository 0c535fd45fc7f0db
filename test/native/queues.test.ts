// Queue creation, stat, IPC_SET, listing and removal through the addon, in a fresh namespace each.
import { readFileSync } from 'node:fs';
import { loadNative, NativeNamespace, NativeErrorFields } from '../../lib/native';
import { TestNamespace } from '../support/namespace';
import { dumpNamespace, msgqTool } from '../support/msgq-tool';

const IDS_PER_SEQ = 32768;
const CAP_SYS_RESOURCE = 24n;

/** Date.now() in seconds, less lagMs (the kernel's coarse clock, which stamps ctime, may lag Date.now() by a tick). */
function nowSeconds(lagMs = 0): bigint {
  return BigInt(Math.floor((Date.now() - lagMs) / 1000));
}

function readSysctlIn(nsPath: string, name: string): number {
  return Number(msgqTool(nsPath, 'sysctl', name).trim());
}

describe('native queues', () => {
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

  it('creates a queue at a chosen id with seq > 0, key and creator ids, and stat shows every field', async () => {
    const wanted = 3 * IDS_PER_SEQ + 5;
    const before = nowSeconds(50);
    const id = await ns.createQueue({ key: 0x1234abcd, id: wanted, mode: 0o640, cuid: 1234, cgid: 5678 });
    const after = nowSeconds();
    expect(id).toBe(wanted);

    const stat = await ns.statQueue(id);
    const msgmnb = readSysctlIn(target.path, 'msgmnb');
    expect(stat).toEqual({
      id: wanted,
      index: 5,
      seq: 3,
      key: 0x1234abcd,
      uid: 1234,
      gid: 5678,
      cuid: 1234,
      cgid: 5678,
      mode: 0o640,
      stime: 0n,
      rtime: 0n,
      ctime: expect.any(BigInt),
      cbytes: 0,
      qnum: 0,
      qbytes: msgmnb,
      lspid: 0,
      lrpid: 0,
    });
    expect(stat.ctime >= before && stat.ctime <= after).toBe(true);

    // The independent oracle sees the same queue.
    const [dumped] = dumpNamespace(target.path).queues;
    expect(dumped).toMatchObject({ id: wanted, key: 0x1234abcd, uid: 1234, gid: 5678, cuid: 1234, cgid: 5678, mode: 0o640 });
  });

  it('keeps a key above 2^31 unsigned and creates IPC_PRIVATE queues', async () => {
    const high = await ns.createQueue({ key: 0xdeadbeef, id: 9, mode: 0o600, cuid: 0, cgid: 0 });
    const privateQueue = await ns.createQueue({ key: 0, id: 2 * IDS_PER_SEQ + 10, mode: 0o600, cuid: 0, cgid: 0 });
    expect((await ns.statQueue(high)).key).toBe(0xdeadbeef);
    expect(await ns.statQueue(privateQueue)).toMatchObject({ id: 2 * IDS_PER_SEQ + 10, key: 0 });
  });

  it('setQueue sets owner, mode and qbytes and leaves the creator alone', async () => {
    const id = await ns.createQueue({ key: 0x51, id: 40, mode: 0o600, cuid: 100, cgid: 200 });
    await ns.setQueue(id, { uid: 42, gid: 43, mode: 0o604, qbytes: 1000 });
    expect(await ns.statQueue(id)).toMatchObject({ uid: 42, gid: 43, cuid: 100, cgid: 200, mode: 0o604, qbytes: 1000 });
    expect(JSON.parse(msgqTool(target.path, 'stat', id))).toMatchObject({ uid: 42, gid: 43, mode: 0o604, qbytes: 1000 });
  });

  it('setQueue above msgmnb needs CAP_SYS_RESOURCE and says to raise msgmnb when it is missing', async () => {
    const id = await ns.createQueue({ key: 0x52, id: 41, mode: 0o600, cuid: 0, cgid: 0 });
    const msgmnb = (await ns.readSysctls()).msgmnb;
    const capabilities = BigInt((await ns.probe()).effectiveCapabilities);
    const request = { uid: 0, gid: 0, mode: 0o600, qbytes: msgmnb * 4 };
    if ((capabilities >> CAP_SYS_RESOURCE) & 1n) {
      await ns.setQueue(id, request);
      expect((await ns.statQueue(id)).qbytes).toBe(msgmnb * 4);
    } else {
      await expect(ns.setQueue(id, request)).rejects.toMatchObject({
        code: 'EPERM',
        syscall: 'msgctl',
        message: expect.stringMatching(/IPC_SET of queue id 41 .* in \/proc\/\d+\/ns\/ipc: .*raise msgmnb first/),
      });
      // Raising msgmnb in the namespace first is the way around it.
      await ns.writeSysctl('msgmnb', msgmnb * 4);
      await ns.setQueue(id, request);
      expect((await ns.statQueue(id)).qbytes).toBe(msgmnb * 4);
    }
  });

  it('listQueues finds every queue across index holes, in index order', async () => {
    const ids = [
      await ns.createQueue({ key: 0x61, id: 7, mode: 0o600, cuid: 0, cgid: 0 }),
      await ns.createQueue({ key: 0x62, id: 2 * IDS_PER_SEQ + 100, mode: 0o600, cuid: 0, cgid: 0 }),
      await ns.createQueue({ key: 0x63, id: 5 * IDS_PER_SEQ + 3, mode: 0o600, cuid: 0, cgid: 0 }),
    ];
    const removed = await ns.createQueue({ key: 0x64, id: 50, mode: 0o600, cuid: 0, cgid: 0 });
    await ns.removeQueue(removed);
    const listed = await ns.listQueues();
    expect(listed.map((queue) => queue.id)).toEqual([5 * IDS_PER_SEQ + 3, 7, 2 * IDS_PER_SEQ + 100]);
    expect(listed.map((queue) => queue.id)).toEqual(dumpNamespace(target.path).queues.map((queue) => queue.id));
    expect(new Set(listed.map((queue) => queue.id))).toEqual(new Set(ids));
  });

  it('createQueue on a taken id rejects with E_ID_MISMATCH and leaves no extra queue', async () => {
    const id = await ns.createQueue({ key: 0x71, id: 12, mode: 0o600, cuid: 0, cgid: 0 });
    const failure = ns.createQueue({ key: 0x72, id: 12, mode: 0o600, cuid: 0, cgid: 0 });
    await expect(failure).rejects.toMatchObject({
      code: 'E_ID_MISMATCH',
      errno: 0,
      message: expect.stringContaining(`msgget key 0x72 at id 12 as uid 0 gid 0 in ${target.path}: the kernel gave id`),
    });
    expect((await ns.listQueues()).map((queue) => queue.id)).toEqual([id]);
    expect(readSysctlIn(target.path, 'msg_next_id')).toBe(-1);
  });

  it('createQueue with a taken key rejects with EEXIST and clears msg_next_id', async () => {
    await ns.createQueue({ key: 0x81, id: 3, mode: 0o600, cuid: 0, cgid: 0 });
    await expect(ns.createQueue({ key: 0x81, id: 4 * IDS_PER_SEQ + 4, mode: 0o600, cuid: 0, cgid: 0 })).rejects.toMatchObject({
      code: 'EEXIST',
      errno: 17,
      syscall: 'msgget',
      message: `msgget key 0x81 at id ${4 * IDS_PER_SEQ + 4} as uid 0 gid 0 in ${target.path}: File exists`,
    });
    expect(readSysctlIn(target.path, 'msg_next_id')).toBe(-1);
    // A plain msgget afterwards does not land on the id of the failed create.
    const plain = Number(msgqTool(target.path, 'create', '0x82', '600').trim());
    expect(plain).not.toBe(4 * IDS_PER_SEQ + 4);
  });

  it('creates as the creator ids on the session thread only: the test process keeps its own ids', async () => {
    const status = (): string => readFileSync('/proc/self/status', 'utf8').split('\n').filter((line) => /^(Uid|Gid|CapEff):/.test(line)).join('\n');
    const before = status();
    await ns.createQueue({ key: 0x91, id: 20, mode: 0o600, cuid: 4321, cgid: 8765 });
    expect(status()).toBe(before);
    // After the create the session thread is root again: it can raise msgmnb, which needs its capabilities.
    await ns.writeSysctl('msgmnb', 20000);
    expect(readSysctlIn(target.path, 'msgmnb')).toBe(20000);
    const probe = await ns.probe();
    expect(BigInt(probe.effectiveCapabilities)).toBe(BigInt(`0x${/CapEff:\s*([0-9a-f]+)/.exec(before)![1]}`));
  });

  it('removeQueue removes the queue, and stat of a removed queue is a clear EINVAL', async () => {
    const id = await ns.createQueue({ key: 0xa1, id: IDS_PER_SEQ + 1, mode: 0o600, cuid: 0, cgid: 0 });
    await ns.removeQueue(id);
    expect(dumpNamespace(target.path).queues).toEqual([]);
    const stat = ns.statQueue(id);
    await expect(stat).rejects.toMatchObject({ code: 'EINVAL', errno: 22, syscall: 'msgctl' });
    const error = (await stat.catch((caught: unknown) => caught)) as NativeErrorFields;
    expect(error.message).toContain(`queue id ${IDS_PER_SEQ + 1}`);
    expect(error.message).toContain(`in ${target.path}`);
    expect(error.message).toContain('no such queue');
    await expect(ns.removeQueue(id)).rejects.toMatchObject({ code: 'EINVAL', syscall: 'msgctl' });
  });

  it('runs jobs in the order they were called', async () => {
    const created = ns.createQueue({ key: 0xb1, id: 30, mode: 0o600, cuid: 0, cgid: 0 });
    const set = ns.setQueue(30, { uid: 7, gid: 8, mode: 0o660, qbytes: 500 });
    const stat = ns.statQueue(30);
    const removed = ns.removeQueue(30);
    const list = ns.listQueues();
    expect(await created).toBe(30);
    await set;
    expect(await stat).toMatchObject({ uid: 7, gid: 8, mode: 0o660, qbytes: 500 });
    await removed;
    expect(await list).toEqual([]);
  });

  it('rejects malformed arguments before any system call', async () => {
    await expect(ns.statQueue(-1)).rejects.toMatchObject({ code: 'E_INTERNAL', errno: 0 });
    await expect(ns.createQueue({ key: 1, id: 1, mode: 0o1777, cuid: 0, cgid: 0 })).rejects.toMatchObject({
      code: 'E_INTERNAL',
      message: expect.stringContaining('mode'),
    });
    await expect(ns.createQueue({ key: 1, id: 1, mode: 0o600, cuid: 0xffffffff, cgid: 0 })).rejects.toMatchObject({ code: 'E_INTERNAL' });
    expect(dumpNamespace(target.path).queues).toEqual([]);
  });
});
