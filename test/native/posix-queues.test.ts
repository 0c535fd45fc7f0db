// The native POSIX queue calls, against real mqueue filesystems of fresh namespaces: what they read,
// that the take puts every message back in order, and that malformed calls never reach a system call.
import { execFileSync } from 'node:child_process';
import { loadNative, NativeNamespace } from '../../lib/native';
import { packPosixMessages } from '../../lib/image/posix-queues';
import { TestNamespace, ownNamespace } from '../support/namespace';
import { mqTool, patternHex, receiveAll } from '../support/mq-tool';
import { UserNamespacedIpc } from '../support/user-namespace';

let target: TestNamespace;
let session: NativeNamespace;
let host: string;

beforeEach(async () => {
  host = ownNamespace();
  target = await TestNamespace.create();
  session = await loadNative().openNamespace(target.path);
});

afterEach(async () => {
  await session.close();
  await target.destroy();
  // No thread of this process was left in the target namespace.
  expect(ownNamespace()).toBe(host);
});

test('listPosixQueues reads each queue of the target namespace only: mode, owner, attributes, status line', async () => {
  mqTool(target.path, 'create', 'b', 5, 100, '640');
  mqTool(target.path, 'chown', 'b', 42, 43);
  mqTool(target.path, 'send', 'b', 7, 30, 1);
  mqTool(target.path, 'create', 'a', 3, 10, '0');
  const other = await TestNamespace.create();
  try {
    mqTool(other.path, 'create', 'elsewhere', 2, 8, '600');
    expect(await session.listPosixQueues()).toEqual([
      { name: 'a', mode: 0, uid: 0, gid: 0, maxmsg: 3, msgsize: 10, curmsgs: 0, qsize: 0, notify: 0, notifySigno: 0, notifyPid: 0 },
      { name: 'b', mode: 0o640, uid: 42, gid: 43, maxmsg: 5, msgsize: 100, curmsgs: 1, qsize: 30, notify: 0, notifySigno: 0, notifyPid: 0 },
    ]);
  } finally {
    await other.destroy();
  }
});

test('takePosixMessages returns every message in delivery order and leaves the queue holding the same ones', async () => {
  mqTool(target.path, 'create', 'q', 10, 64, '600');
  const sent: Array<[number, number, number]> = [[1, 5, 1], [9, 0, 2], [1, 64, 3], [9, 3, 4]];
  for (const [priority, size, seed] of sent) mqTool(target.path, 'send', 'q', priority, size, seed);
  const taken = await session.takePosixMessages('q');
  const expected = [[9, 0, 2], [9, 3, 4], [1, 5, 1], [1, 64, 3]].map(([priority, size, seed]) => ({ priority, body: Buffer.from(patternHex(size, seed), 'hex') }));
  expect(taken.count).toBe(4);
  expect(taken.data.equals(packPosixMessages(expected))).toBe(true);
  expect(taken.before.curmsgs).toBe(4);
  expect(taken.after).toEqual(taken.before);
  expect(receiveAll(target.path, 'q').map((m) => [m.priority, m.hex])).toEqual(expected.map((m) => [m.priority, m.body.toString('hex')]));
});

test('create, send and remove: exact mode and owner, EEXIST for a taken name, the limits read and written in the target', async () => {
  execFileSync('nsenter', [`--ipc=${target.path}`, 'sh', '-c', 'echo 20 > /proc/sys/fs/mqueue/msg_max']);
  await session.createPosixQueue({ name: 'made', mode: 0o4640, uid: 1000, gid: 1001, maxmsg: 20, msgsize: 16 });
  await expect(session.createPosixQueue({ name: 'made', mode: 0o600, uid: 0, gid: 0, maxmsg: 1, msgsize: 1 })).rejects.toMatchObject({ code: 'EEXIST', syscall: 'mq_open' });
  await expect(session.createPosixQueue({ name: 'big', mode: 0o600, uid: 0, gid: 0, maxmsg: 21, msgsize: 16 })).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/msg_max/) });
  expect(await session.sendPosixMessages('made', packPosixMessages([{ priority: 3, body: Buffer.from('hi') }]), 1)).toBe(1);
  const [made] = await session.listPosixQueues();
  expect(made).toMatchObject({ name: 'made', mode: 0o4640, uid: 1000, gid: 1001, maxmsg: 20, msgsize: 16, curmsgs: 1, qsize: 2 });
  expect((await session.readMqueueLimits()).msg_max).toBe(20);
  await session.writeMqueueLimit('msg_max', 30);
  expect(execFileSync('nsenter', [`--ipc=${target.path}`, 'cat', '/proc/sys/fs/mqueue/msg_max'], { encoding: 'utf8' }).trim()).toBe('30');
  await session.removePosixQueue('made');
  expect(await session.listPosixQueues()).toEqual([]);
});

test('writeMqueueLimit of a user-namespaced namespace: EACCES as host root, written as its own root, the thread back to root after', async () => {
  const container = await UserNamespacedIpc.create('0 100000 65536');
  const userSession = await loadNative().openNamespace(container.path);
  try {
    await expect(userSession.writeMqueueLimit('msgsize_max', 16384)).rejects.toMatchObject({ code: 'EACCES', syscall: 'open' });
    await userSession.writeMqueueLimit('msgsize_max', 16384, { uid: 100000, gid: 100000 });
    expect((await userSession.readMqueueLimits()).msgsize_max).toBe(16384);
    // Root's ids again: a queue owned by the container's uid 1000 is created (as host uid 101000), and a write without `as` is refused again.
    await userSession.createPosixQueue({ name: 'app', mode: 0o600, uid: 101000, gid: 101000, maxmsg: 2, msgsize: 12000 });
    expect(await userSession.listPosixQueues()).toMatchObject([{ name: 'app', uid: 101000, gid: 101000, msgsize: 12000 }]);
    await expect(userSession.writeMqueueLimit('msgsize_max', 8192)).rejects.toMatchObject({ code: 'EACCES' });
    await expect(userSession.writeMqueueLimit('msgsize_max', 8192, { uid: -1, gid: 0 })).rejects.toMatchObject({ code: 'E_INTERNAL' });
  } finally {
    await userSession.close();
    await container.destroy();
  }
});

test('malformed calls are refused before any system call', async () => {
  for (const name of ['', 'a/b', '.', '..', 'x'.repeat(256)]) {
    await expect(session.takePosixMessages(name)).rejects.toMatchObject({ code: 'E_INTERNAL' });
  }
  await expect(session.sendPosixMessages('q', Buffer.from([1, 0, 0, 0, 9, 0, 0, 0]), 1)).rejects.toMatchObject({ code: 'E_INTERNAL', message: expect.stringMatching(/claims 9 bytes/) });
  await expect(session.writeMqueueLimit('msgmax' as never, 1)).rejects.toMatchObject({ code: 'E_INTERNAL' });
  await expect(session.createPosixQueue({ name: 'q', mode: 0o10000, uid: 0, gid: 0, maxmsg: 1, msgsize: 1 })).rejects.toMatchObject({ code: 'E_INTERNAL' });
  await expect(session.takePosixMessages('missing')).rejects.toMatchObject({ code: 'ENOENT', syscall: 'openat' });
});
