// Rootless containers: IPC namespaces owned by user namespaces, their maps written from outside.
// Ids are compared as each namespace sees them (msgq-tool run inside with nsenter --user --ipc).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { TestNamespace } from '../support/namespace';
import { dumpNamespace, msgqTool, NamespaceDump } from '../support/msgq-tool';
import { bindNamespaceFile, UserNamespacedIpc } from '../support/user-namespace';
import { runCli } from '../support/cli';
import { check, inspect as inspectImage, restore, save, verify } from '../../lib';

jest.setTimeout(60_000);

const RESTORABLE = ['id', 'key', 'uid', 'gid', 'cuid', 'cgid', 'mode', 'qbytes', 'qnum', 'cbytes'] as const;
const SOURCE_LIMITS = { msgmax: 8000, msgmnb: 65536, msgmni: 500 };
/** Larger than SOURCE_LIMITS.msgmax: msgmax was lowered after it was sent. */
const BIG_MESSAGE_BYTES = 15000;

const inspect = (image: string) => inspectImage(readFileSync(image));

/** A queue as the host sees it (IPC_STAT from the host's user namespace). */
function hostView(nsPath: string, id: number): { uid: number; gid: number; cuid: number; cgid: number } {
  return JSON.parse(msgqTool(nsPath, 'stat', id)) as { uid: number; gid: number; cuid: number; cgid: number };
}
const idsOf = (q: { uid: number; gid: number; cuid: number; cgid: number }) => [q.uid, q.gid, q.cuid, q.cgid];

function restorableView(dump: NamespaceDump) {
  return {
    limits: dump.limits,
    queues: dump.queues.map((q) => ({ ...Object.fromEntries(RESTORABLE.map((f) => [f, q[f]])), messages: q.messages })),
  };
}

let dir: string;
const holders: Array<{ destroy(): Promise<void> }> = [];
const unmounts: Array<() => void> = [];

async function userNamespaced(map: string): Promise<UserNamespacedIpc> {
  const ns = await UserNamespacedIpc.create(map);
  holders.push(ns);
  return ns;
}

async function plainNamespace(): Promise<TestNamespace> {
  const ns = await TestNamespace.create();
  holders.push(ns);
  return ns;
}

beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'ipc-ckpt-userns-'));
});

afterEach(async () => {
  for (const unmount of unmounts.splice(0)) unmount();
  await Promise.all(holders.splice(0).map((h) => h.destroy()));
  rmSync(dir, { recursive: true, force: true });
});

/**
 * Queues made inside a rootless container: one by its root, one by uid 1234 and owned by uid 1000
 * (mode 0600), limits raised, a message above today's msgmax. Returns the ids of the two queues.
 */
function populateContainer(ns: UserNamespacedIpc): { rootQueue: number; appQueue: number } {
  ns.tool(['sysctl', 'msgmax', 20000]);
  ns.tool(['sysctl', 'msgmnb', SOURCE_LIMITS.msgmnb]);
  ns.tool(['sysctl', 'msgmni', SOURCE_LIMITS.msgmni]);
  const rootQueue = Number(ns.tool(['create', '0x2001', '600']).trim());
  ns.tool(['send', rootQueue, 1, 100, 1]);
  // msg_next_id takes CAP_CHECKPOINT_RESTORE, which uid 1234 lacks: its root sets it, uid 1234 creates.
  ns.tool(['sysctl', 'msg_next_id', 32768 + 3]);
  const appQueue = Number(ns.tool(['create', '0x2002', '640'], { uid: 1234, gid: 1234 }).trim());
  ns.tool(['set', appQueue, 1000, 1000, '600', 40000]);
  ns.tool(['send', appQueue, 7, BIG_MESSAGE_BYTES, 2]);
  ns.tool(['send', appQueue, 8, 0]);
  ns.tool(['sysctl', 'msgmax', SOURCE_LIMITS.msgmax]);
  return { rootQueue, appQueue };
}

test('a rootless container\'s queues restored into one mapping 0 -> 200000 look the same from inside, field by field and message by message', async () => {
  const source = await userNamespaced('0 100000 65536');
  const target = await userNamespaced('0 200000 65536');
  const { rootQueue, appQueue } = populateContainer(source);
  // From the host the kernel shows host ids: what the old save recorded.
  expect([idsOf(hostView(source.path, rootQueue)), idsOf(hostView(source.path, appQueue))]).toEqual([[100000, 100000, 100000, 100000], [101000, 101000, 101234, 101234]]);

  const image = path.join(dir, 'container.img');
  const saved = runCli(['save', '-t', String(source.pid), '-o', image]);
  expect(saved.stderr).toMatch(/msgmax raised for the copy and put back/);
  expect(saved.status).toBe(0);
  expect(source.dumpInside().limits).toEqual(SOURCE_LIMITS);

  const restored = runCli(['restore', '--ns', target.path, '-i', image]);
  expect(restored.stderr).toMatch(/restored 2 queue\(s\), 3 message\(s\)/);
  expect(restored.status).toBe(0);

  // util-linux's ipcs inside each container: keys, ids, owners, creators, modes, bytes and counts alike.
  for (const view of [['-q'], ['-q', '-c'], ['-q', '-l']]) expect(target.run('ipcs', ...view)).toBe(source.run('ipcs', ...view));
  const inside = target.dumpInside();
  expect(restorableView(inside)).toEqual(restorableView(source.dumpInside()));
  expect(inside.queues.find((q) => q.id === appQueue)).toMatchObject({ uid: 1000, gid: 1000, cuid: 1234, cgid: 1234, mode: 0o600, qbytes: 40000 });
  expect(inside.limits).toEqual(SOURCE_LIMITS);
  // The host sees the target's own host ids.
  expect([idsOf(hostView(target.path, rootQueue)), idsOf(hostView(target.path, appQueue))]).toEqual([[200000, 200000, 200000, 200000], [201000, 201000, 201234, 201234]]);

  const verified = runCli(['verify', '--ns', target.path, '-i', image]);
  expect(verified.stdout).toMatch(/^equal: 2 queue\(s\), 3 message\(s\).*ids as the namespace sees them, through user:\[\d+\] \(uid_map 0 200000 65536/);
  expect(verified.status).toBe(0);

  // The application, uid 1000 inside, reads its own 0600 queue.
  expect(target.tool(['recv', appQueue, 0, '--nowait'], { uid: 1000, gid: 1000 }).trim()).toMatch(new RegExp(`^7 ${BIG_MESSAGE_BYTES} [0-9a-f]{64}$`));
  // A uid the queue does not belong to cannot: the restored mode holds too.
  expect(() => target.tool(['recv', appQueue, 0, '--nowait'], { uid: 1001, gid: 1001 })).toThrow(/Permission denied/);
});

test('inspect --json shows the ids as the saved namespace saw them, and the maps, and says so', async () => {
  const source = await userNamespaced('0 100000 65536');
  populateContainer(source);
  const image = path.join(dir, 'container.img');
  await save({ pid: source.pid }, image);
  const report = JSON.parse(runCli(['inspect', '--json', image]).stdout);
  expect(report.ids).toEqual({
    view: 'namespace',
    text: expect.stringMatching(/as the saved namespace saw them inside its user namespace \(uid_map 0 100000 65536; gid_map 0 100000 65536\)/),
    mapping: { ownUserNamespace: false, uid: [{ inside: 0, outside: 100000, count: 65536 }], gid: [{ inside: 0, outside: 100000, count: 65536 }] },
  });
  expect(report.format.extensions).toContain('id-mapping');
  expect(report.queues.map((q: { uid: number; cuid: number }) => [q.uid, q.cuid])).toEqual([[0, 0], [1000, 1234]]);
});

test('a host-namespace image restored into a user namespace keeps the ids the namespace sees, and the reverse', async () => {
  const host = await plainNamespace();
  msgqTool(host.path, 'sysctl', 'msgmnb', 32768);
  const hostQueue = Number(msgqTool(host.path, 'create', '0x3001', '600').trim());
  msgqTool(host.path, 'set', hostQueue, 1000, 1001, '600', 32768);
  msgqTool(host.path, 'send', hostQueue, 5, 200, 3);
  const hostImage = path.join(dir, 'host.img');
  await save({ ns: host.path }, hostImage);
  expect((await inspect(hostImage)).ids).toMatchObject({ view: 'namespace', mapping: { ownUserNamespace: true } });

  const container = await userNamespaced('0 200000 65536');
  await restore({ pid: container.pid }, hostImage);
  expect(restorableView(container.dumpInside())).toEqual(restorableView(dumpNamespace(host.path)));
  expect(hostView(container.path, hostQueue)).toMatchObject({ uid: 201000, gid: 201001, cuid: 200000, cgid: 200000 });
  expect(await verify({ pid: container.pid }, hostImage)).toMatchObject({ equal: true });

  // The reverse: a container's image into a namespace of the host's own user namespace.
  const source = await userNamespaced('0 100000 65536');
  populateContainer(source);
  const containerImage = path.join(dir, 'container.img');
  await save({ pid: source.pid }, containerImage);
  const plain = await plainNamespace();
  await restore({ ns: plain.path }, containerImage);
  expect(restorableView(dumpNamespace(plain.path))).toEqual(restorableView(source.dumpInside()));
  expect(await verify({ ns: plain.path }, containerImage)).toMatchObject({ equal: true });
});

test('an image whose ids the target does not map is refused before any change, naming the queues and ids', async () => {
  const source = await userNamespaced('0 100000 65536');
  const { appQueue } = populateContainer(source);
  const image = path.join(dir, 'container.img');
  await save({ pid: source.pid }, image);
  // A small container: uid 1000 and 1234 do not exist in it.
  const target = await userNamespaced('0 300000 1000');
  target.tool(['create', '0x4001', '600', '--id', 100]);
  const before = target.dumpInside();
  const msgNextId = target.tool(['sysctl', 'msg_next_id']);

  const result = runCli(['restore', '-t', String(target.pid), '-i', image]);
  expect(result.status).toBe(1);
  expect(result.stderr).toMatch(/nothing was changed/);
  expect(result.stderr).toMatch(new RegExp(`id ${appQueue} \\(key 0x00002002\\): uid 1000, gid 1000, cuid 1234, cgid 1234 \\(as the saved namespace saw them\\) have no mapping in user:\\[\\d+\\] \\(uid_map 0 300000 1000`));
  expect(result.stderr).not.toMatch(/key 0x00002001/);
  expect(target.dumpInside()).toEqual(before);
  expect(target.tool(['sysctl', 'msg_next_id'])).toBe(msgNextId);
});

test('a strict v16 image holds host ids, which another container does not map: refused, not restored as nobody', async () => {
  const source = await userNamespaced('0 100000 65536');
  populateContainer(source);
  const image = path.join(dir, 'strict.img');
  expect(runCli(['save', '--strict-v16', '-t', String(source.pid), '-o', image]).status).toBe(0);
  const report = await inspect(image);
  expect(report.ids.view).toBe('host');
  expect(report.queues.map((q) => q.cuid)).toEqual([100000, 101234]);

  const target = await userNamespaced('0 200000 65536');
  const result = runCli(['restore', '--strict-v16', '-t', String(target.pid), '-i', image]);
  expect(result.status).toBe(1);
  expect(result.stderr).toMatch(/uid 100000, gid 100000, cuid 100000, cgid 100000 \(host ids: the image has no id-mapping record\) have no mapping/);
  expect(target.dumpInside().queues).toEqual([]);
  // The same host ids are restored as they are into the source's own user namespace.
  const twin = await UserNamespacedIpc.create('0 100000 65536');
  holders.push(twin);
  await restore({ pid: twin.pid }, image, { strictV16: true });
  expect(restorableView(twin.dumpInside())).toEqual(restorableView(source.dumpInside()));
});

test('a bind-mounted nsfs file with no process left: save, check and restore find the owning user namespace from the IPC namespace itself', async () => {
  const source = await userNamespaced('0 100000 65536');
  populateContainer(source);
  const expected = restorableView(source.dumpInside());
  const sourceFile = path.join(dir, 'source-ipc');
  unmounts.push(bindNamespaceFile(source.path, sourceFile));
  await source.destroy();

  const image = path.join(dir, 'container.img');
  expect(runCli(['save', '--ns', sourceFile, '-o', image, '-q']).status).toBe(0);
  expect((await inspect(image)).queues.map((q) => [q.uid, q.cuid])).toEqual([[0, 0], [1000, 1234]]);

  const target = await userNamespaced('0 200000 65536');
  const targetFile = path.join(dir, 'target-ipc');
  unmounts.unshift(bindNamespaceFile(target.path, targetFile));
  const checked = runCli(['check', '--ns', targetFile]);
  expect(checked.stdout).toMatch(/^ok +user namespace: the IPC namespace is owned by user:\[\d+\] \(uid_map 0 200000 65536; gid_map 0 200000 65536\)/m);
  expect(checked.status).toBe(0);
  expect(runCli(['restore', '--ns', targetFile, '-i', image, '-q']).status).toBe(0);
  expect(restorableView(target.dumpInside())).toEqual(expected);
  expect(runCli(['verify', '--ns', targetFile, '-i', image]).status).toBe(0);
});

test('check --ns on a user-namespaced target: its user namespace, limits writable only as its root, exit 0', async () => {
  const target = await userNamespaced('0 200000 65536');
  const result = runCli(['check', '--ns', target.path]);
  expect(result.status).toBe(0);
  const lines = result.stdout.trim().split('\n');
  expect(lines).toEqual(expect.arrayContaining([
    expect.stringMatching(/^ok +user namespace: the IPC namespace is owned by user:\[\d+\] \(uid_map 0 200000 65536; gid_map 0 200000 65536\)/),
    expect.stringMatching(/^ok +queue ids: /),
    expect.stringMatching(/^ok +limits: msgmax 8192, msgmnb 16384, msgmni 32000: writable as uid 200000 gid 200000, the namespace's own root/),
    'save: can work; restore: can work',
  ]));
  // What the finding claims is what the kernel does: host root itself may not write them.
  expect(() => msgqTool(target.path, 'sysctl', 'msgmax', 9000)).toThrow(/Permission denied/);
  expect(spawnSync('nsenter', [`--ipc=${target.path}`, 'setpriv', '--euid=200000', 'tee', '/proc/sys/kernel/msgmax'], { input: '9000\n' }).status).toBe(0);
  expect(target.dumpInside().limits.msgmax).toBe(9000);
});

test('a queue whose owner the container cannot see: check says save is blocked, and save refuses it clearly', async () => {
  const source = await userNamespaced('0 100000 65536');
  const queue = Number(source.tool(['create', '0x5001', '600']).trim());
  // Host root gives it a host uid outside the container's map: inside it shows as the overflow uid.
  msgqTool(source.path, 'set', queue, 5, 100000, '600', 16384);
  const result = await check({ pid: source.pid });
  expect(result.canSave).toBe(false);
  expect(result.findings).toContainEqual(expect.objectContaining({ status: 'fail', subject: 'queue ids', text: expect.stringMatching(new RegExp(`queue ${queue}: host uid 5`)) }));
  const saved = runCli(['save', '-t', String(source.pid), '-o', path.join(dir, 'x.img')]);
  expect(saved.status).toBe(1);
  expect(saved.stderr).toMatch(new RegExp(`queue ${queue} \\(key 0x5001\\) in /proc/${source.pid}/ns/ipc has host uid 5, which the user namespace that owns it, user:\\[\\d+\\] \\(uid_map 0 100000 65536; gid_map 0 100000 65536\\), does not map`));
});

test('the rollback guardian puts a user-namespaced target\'s limits back as its root when ipc-ckpt dies', async () => {
  const target = await userNamespaced('0 200000 65536');
  const script = `
    const { RollbackGuardian } = require(${JSON.stringify(path.resolve(__dirname, '../../dist/lib/rollback-guardian'))});
    const { openNamespace } = require(${JSON.stringify(path.resolve(__dirname, '../../dist/lib/namespace'))});
    (async () => {
      const target = { nsPath: ${JSON.stringify(target.path)}, label: 'target' };
      const guardian = RollbackGuardian.start(target);
      await guardian.registerSysctl('msgmax', 8192, { writeAsUid: 200000, writeAsGid: 200000 });
      const ns = await openNamespace(target);
      await ns.writeSysctl('msgmax', 30000, { uid: 200000, gid: 200000 });
      console.log('raised');
      process.kill(process.pid, 'SIGKILL');
    })();`;
  const died = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
  expect(died.signal).toBe('SIGKILL');
  expect(died.stdout).toBe('raised\n');
  const deadline = Date.now() + 15_000;
  while (target.dumpInside().limits.msgmax !== 8192 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
  expect(target.dumpInside().limits.msgmax).toBe(8192);
});
