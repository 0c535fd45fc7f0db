// The namespace lock is keyed by the namespace's identity: two paths to one namespace share it,
// another namespace has its own. Shared holders coexist; exclusive excludes both kinds.
import { spawn, ChildProcess } from 'node:child_process';
import { readlinkSync } from 'node:fs';
import { TestNamespace } from '../support/namespace';
import { NamespaceLock } from '../../lib/namespace-lock';
import { resolveTarget } from '../../lib/target';
import { IpcCkptError } from '../../lib/errors';

jest.setTimeout(30_000);

let ns: TestNamespace;
let other: TestNamespace;
let secondProcess: ChildProcess;

beforeAll(async () => {
  [ns, other] = await Promise.all([TestNamespace.create(), TestNamespace.create()]);
  // A second process in the same namespace: another path to it.
  secondProcess = spawn('nsenter', [`--ipc=${ns.path}`, 'sleep', 'infinity'], { stdio: 'ignore' });
  while (readlinkSync(`/proc/${secondProcess.pid}/ns/ipc`) !== ns.inode) await new Promise((r) => setTimeout(r, 5));
});

afterAll(async () => {
  secondProcess.kill('SIGKILL');
  await Promise.all([ns.destroy(), other.destroy()]);
});

async function refused(run: Promise<NamespaceLock>): Promise<IpcCkptError> {
  const error = await run.then((lock) => {
    lock.release();
    return undefined;
  }, (e: unknown) => e);
  expect(error).toBeInstanceOf(IpcCkptError);
  expect((error as IpcCkptError).code).toBe('E_LOCKED');
  return error as IpcCkptError;
}

test('two paths to one namespace share its lock; another namespace has its own', async () => {
  const held = await NamespaceLock.acquire(resolveTarget({ ns: ns.path }), 'exclusive');
  try {
    const error = await refused(NamespaceLock.acquire(resolveTarget({ pid: secondProcess.pid }), 'exclusive', { waitSeconds: 0 }));
    expect(error.message).toMatch(new RegExp(`holds the lock of /proc/${secondProcess.pid}/ns/ipc \\(pid ${process.pid};`));
    (await NamespaceLock.acquire(resolveTarget({ ns: other.path }), 'exclusive', { waitSeconds: 0 })).release();
  } finally {
    held.release();
  }
  (await NamespaceLock.acquire(resolveTarget({ pid: secondProcess.pid }), 'exclusive', { waitSeconds: 0 })).release();
});

test('shared holders coexist; an exclusive request waits for them; an upgrade waits for the other shared holder', async () => {
  const target = resolveTarget({ ns: ns.path });
  const first = await NamespaceLock.acquire(target, 'shared');
  const second = await NamespaceLock.acquire(target, 'shared', { waitSeconds: 0 });
  await refused(NamespaceLock.acquire(target, 'exclusive', { waitSeconds: 0 }));
  const told: string[] = [];
  const upgrading = first.upgrade({ onLockWait: (text) => told.push(text) });
  await new Promise((r) => setTimeout(r, 100));
  expect(told).toHaveLength(1);
  expect(told[0]).toMatch(/waiting for the lock of .*, held by pid \d+ \(shared\)/);
  second.release();
  await upgrading;
  expect(first.mode).toBe('exclusive');
  await refused(NamespaceLock.acquire(target, 'shared', { waitSeconds: 0 }));
  first.release();
});
