// POSIX queues of rootless containers: owners are saved as the namespace sees them and restored through
// the target's own mapping; the mqueue limits are written as the target namespace's root. Everything is
// looked at from inside (mq-tool and the mqueue filesystem through nsenter --user --ipc).
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { UserNamespacedIpc } from '../support/user-namespace';
import { buildMqTool, patternHex, ReceivedPosixMessage } from '../support/mq-tool';
import { check, inspect, restore, save, verify } from '../../lib';

jest.setTimeout(60_000);

/** Non-default limits; msgsize_max above the default so the target must raise it for the queue. */
const LIMITS = { queues_max: 300, msg_max: 40, msgsize_max: 16384, msg_default: 7, msgsize_default: 1000 };
const APP = { uid: 1000, gid: 1000 };
const QUEUE = { name: 'app', maxmsg: 20, msgsize: 12000 };
const MESSAGES = [
  { priority: 3, size: 12000 },
  { priority: 0, size: 0 },
  { priority: 7, size: 1 },
  { priority: 3, size: 500 },
  { priority: 32767, size: 64 },
];

let dir: string;
const holders: UserNamespacedIpc[] = [];

beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'ipc-ckpt-posix-userns-'));
});

afterEach(async () => {
  await Promise.all(holders.splice(0).map((h) => h.destroy()));
  rmSync(dir, { recursive: true, force: true });
});

async function container(map: string): Promise<UserNamespacedIpc> {
  const ns = await UserNamespacedIpc.create(map);
  holders.push(ns);
  return ns;
}

/** Runs argv inside the container's user and IPC namespaces, as its root or as `as` (the namespace's own ids). */
function inside(ns: UserNamespacedIpc, argv: Array<string | number>, as?: { uid: number; gid: number }): string {
  const ids = as ? [`--setuid=${as.uid}`, `--setgid=${as.gid}`] : [];
  return execFileSync('nsenter', [`--target=${ns.pid}`, '--user', '--ipc', ...ids, '--', ...argv.map(String)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

const mqInside = (ns: UserNamespacedIpc, args: Array<string | number>, as?: { uid: number; gid: number }) => inside(ns, [buildMqTool(), ...args], as);

/** mq-tool in the container's IPC namespace only: as host root, with host ids. */
const mqFromHost = (ns: UserNamespacedIpc, ...args: Array<string | number>) => execFileSync('nsenter', [`--target=${ns.pid}`, '--ipc', '--', buildMqTool(), ...args.map(String)], { encoding: 'utf8' });

/** "NAME MODE UID GID" of every queue, from a mount of the namespace's mqueue filesystem; ids as `userns` shows them. */
function queueInodes(ns: UserNamespacedIpc, view: 'inside' | 'host'): string {
  const script = 'mount -t mqueue none /mnt && cd /mnt && for q in *; do [ -e "$q" ] && stat -c "%n %a %u %g" "$q"; done; true';
  const enter = view === 'inside' ? ['--user', '--ipc'] : ['--ipc'];
  return execFileSync('nsenter', [`--target=${ns.pid}`, ...enter, '--', 'unshare', '--mount', 'sh', '-c', script], { encoding: 'utf8' });
}

function limitsInside(ns: UserNamespacedIpc): Record<string, number> {
  return Object.fromEntries(Object.keys(LIMITS).map((name) => [name, Number(inside(ns, ['cat', `/proc/sys/fs/mqueue/${name}`]).trim())]));
}

function receiveInside(ns: UserNamespacedIpc, as: { uid: number; gid: number }): ReceivedPosixMessage[] {
  return mqInside(ns, ['receive', QUEUE.name], as)
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => {
      const [priority, size, hex] = line.split(' ');
      return { priority: Number(priority), size: Number(size), hex: hex === '-' ? '' : hex };
    });
}

/** The app's queue made inside by uid 1000 (mode 0600) under non-default limits its root set; returns the delivery order. */
function populate(ns: UserNamespacedIpc): ReceivedPosixMessage[] {
  for (const [name, value] of Object.entries(LIMITS)) inside(ns, ['sh', '-c', `echo ${value} > /proc/sys/fs/mqueue/${name}`]);
  mqInside(ns, ['create', QUEUE.name, QUEUE.maxmsg, QUEUE.msgsize, '600'], APP);
  MESSAGES.forEach((m, seed) => mqInside(ns, ['send', QUEUE.name, m.priority, m.size, seed], APP));
  // Delivery order: highest priority first, FIFO within one priority.
  return MESSAGES.map((m, seed) => ({ ...m, seed }))
    .sort((a, b) => b.priority - a.priority || a.seed - b.seed)
    .map((m) => ({ priority: m.priority, size: m.size, hex: patternHex(m.size, m.seed) }));
}

test('a POSIX queue of uid 1000 moves from a 0->100000 container to a 0->200000 one with its owner, mode, attributes, messages and limits as seen inside', async () => {
  const source = await container('0 100000 65536');
  const target = await container('0 200000 65536');
  const order = populate(source);
  const image = path.join(dir, 'app.img');

  await save({ pid: source.pid }, image, { quiescent: true });
  const report = await inspect(readFileSync(image));
  expect(report.ids.view).toBe('namespace');
  expect(report.posix?.queues).toMatchObject([{ name: QUEUE.name, uid: APP.uid, gid: APP.gid, mode: 0o600 }]);
  await restore({ pid: target.pid }, image);

  expect(queueInodes(target, 'inside')).toBe(queueInodes(source, 'inside'));
  expect(queueInodes(target, 'inside')).toBe(`${QUEUE.name} 600 ${APP.uid} ${APP.gid}\n`);
  expect(queueInodes(target, 'host')).toBe(`${QUEUE.name} 600 201000 201000\n`);
  expect(limitsInside(target)).toEqual(LIMITS);
  expect(mqInside(target, ['attr', QUEUE.name], APP).trim()).toBe(`${QUEUE.maxmsg} ${QUEUE.msgsize} ${MESSAGES.length}`);
  expect(await verify({ pid: target.pid }, image, { quiescent: true })).toMatchObject({ equal: true, differences: [] });
  // The application, uid 1000 inside the target, reads its own 0600 queue.
  expect(receiveInside(target, APP)).toEqual(order);
  // The source kept exactly its messages.
  expect(receiveInside(source, APP)).toEqual(order);
});

test('verify reports a POSIX queue whose owner differs as the target namespace sees it', async () => {
  const source = await container('0 100000 65536');
  const target = await container('0 200000 65536');
  populate(source);
  const image = path.join(dir, 'app.img');
  await save({ pid: source.pid }, image, { quiescent: true });
  await restore({ pid: target.pid }, image);
  // Same uid 1000 on the host's side of the source (101000) is unmapped in the target: a difference, not a match.
  mqFromHost(target, 'chown', QUEUE.name, 101000, 101000);
  const result = await verify({ pid: target.pid }, image, { quiescent: true });
  expect(result.equal).toBe(false);
  expect(result.differences.join('\n')).toMatch(/POSIX queue '\/app': host uid 101000, gid 101000 of the live queue not mapped/);
});

test('a POSIX owner the target does not map is a conflict found before any change: no queue, limits as they were', async () => {
  const source = await container('0 100000 65536');
  // Maps ids 0..499 only: the app's uid 1000 has no id in it.
  const target = await container('0 200000 500');
  populate(source);
  const image = path.join(dir, 'app.img');
  await save({ pid: source.pid }, image, { quiescent: true });
  const limitsBefore = limitsInside(target);

  const refused = restore({ pid: target.pid }, image);
  await expect(refused).rejects.toMatchObject({ code: 'E_CONFLICT' });
  await expect(refused).rejects.toThrow(/POSIX queue '\/app': uid 1000, gid 1000 \(as the saved namespace saw them\) have no mapping in user:\[\d+\] \(uid_map 0 200000 500/);
  expect(queueInodes(target, 'inside')).toBe('');
  expect(limitsInside(target)).toEqual(limitsBefore);
});

test('save refuses a POSIX queue whose host owner the source namespace does not map, before taking any message, and writes no image', async () => {
  const source = await container('0 100000 65536');
  const order = populate(source);
  // From the host: owner uid 5, which the 0->100000 namespace sees as the overflow id.
  mqFromHost(source, 'chown', QUEUE.name, 5, 5);
  const found = await check({ pid: source.pid });
  expect(found.canSave).toBe(false);
  expect(found.findings).toContainEqual(expect.objectContaining({ status: 'fail', subject: 'mqueue', text: expect.stringContaining("'/app': host uid 5, gid 5") }));
  const image = path.join(dir, 'app.img');
  const refused = save({ pid: source.pid }, image, { quiescent: true });
  await expect(refused).rejects.toMatchObject({ code: 'E_UNMAPPED_ID' });
  await expect(refused).rejects.toThrow(/POSIX queue '\/app' .* has host uid 5, gid 5, which the user namespace that owns it/);
  expect(existsSync(image)).toBe(false);
  mqFromHost(source, 'chown', QUEUE.name, 101000, 101000);
  expect(receiveInside(source, APP)).toEqual(order);
});

test('the rollback guardian puts a user-namespaced target\'s mqueue limit back as its root when ipc-ckpt dies', async () => {
  const target = await container('0 200000 65536');
  const before = limitsInside(target).msg_max;
  const script = `
    const { RollbackGuardian } = require(${JSON.stringify(path.resolve(__dirname, '../../dist/lib/rollback-guardian'))});
    const { openNamespace } = require(${JSON.stringify(path.resolve(__dirname, '../../dist/lib/namespace'))});
    (async () => {
      const target = { nsPath: ${JSON.stringify(target.path)}, label: 'target' };
      const guardian = RollbackGuardian.start(target);
      await guardian.registerFileRestore('/proc/sys/fs/mqueue/msg_max', '${before}', { writeAsUid: 200000, writeAsGid: 200000 });
      const ns = await openNamespace(target);
      await ns.writeMqueueLimit('msg_max', ${before + 25}, { uid: 200000, gid: 200000 });
      console.log('raised', (await ns.readMqueueLimits()).msg_max);
      process.kill(process.pid, 'SIGKILL');
    })();`;
  const died = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
  expect(died.signal).toBe('SIGKILL');
  expect(died.stdout).toBe(`raised ${before + 25}\n`);
  const deadline = Date.now() + 15_000;
  while (limitsInside(target).msg_max !== before && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
  expect(limitsInside(target).msg_max).toBe(before);
});
