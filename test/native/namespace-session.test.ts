// The session thread is the only thread that ever enters the target namespace, and it ends with the session.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { addonFile, loadNative } from '../../lib/native';
import { TestNamespace, ownNamespace } from '../support/namespace';
import { SESSION_THREAD_NAME, sessionThreads, strayThreads } from './session-threads';

/** Runs a script in a fresh node process that loads the same addon file; returns its stdout. */
function runNode(script: string, nodeOptions: string[] = []): string {
  return execFileSync(process.execPath, [...nodeOptions, '-e', script], {
    encoding: 'utf8',
    timeout: 20000,
    env: { ...process.env, ADDON_FILE: addonFile() },
  });
}

describe('native namespace session', () => {
  let target: TestNamespace;
  let host: string;
  let baseline: Set<number>;

  /** Session threads started by this test (a jest worker may hold others from earlier files). */
  const ourSessionThreads = () => sessionThreads().filter((thread) => !baseline.has(thread.tid));

  /**
   * The same once joined threads have left /proc: pthread_join returns when the kernel clears the
   * thread's tid, a moment before the exiting task is removed from /proc/self/task.
   */
  async function ourSessionThreadsAfterExit(): Promise<ReturnType<typeof ourSessionThreads>> {
    for (let waited = 0; waited < 2000 && ourSessionThreads().length > 0; waited += 10) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    return ourSessionThreads();
  }

  beforeEach(async () => {
    target = await TestNamespace.create();
    host = ownNamespace();
    baseline = new Set(sessionThreads().map((thread) => thread.tid));
  });

  afterEach(async () => {
    await target.destroy();
  });

  it('enters the namespace on its own thread only, and leaves no thread behind after close()', async () => {
    const ns = await loadNative().openNamespace(target.path);
    expect(ns.path).toBe(target.path);
    const [session, ...others] = ourSessionThreads();
    expect(others).toEqual([]);
    expect(session.ipc).toBe(target.inode);
    expect(session.ipc).not.toBe(host);

    await ns.createQueue({ key: 0x10, id: 10, mode: 0o600, cuid: 1, cgid: 1 });
    await ns.listQueues();
    await ns.readSysctls();
    expect(strayThreads(host)).toEqual([]);
    expect(ownNamespace()).toBe(host);

    await ns.close();
    expect(await ourSessionThreadsAfterExit()).toEqual([]);
    expect(strayThreads(host)).toEqual([]);
    await expect(ns.listQueues()).rejects.toMatchObject({ code: 'E_INTERNAL', message: expect.stringContaining('closed') });
    await expect(ns.close()).rejects.toMatchObject({ code: 'E_INTERNAL' });
  });

  it('keeps every other thread in its own namespace after failing calls', async () => {
    const ns = await loadNative().openNamespace(target.path);
    const id = await ns.createQueue({ key: 0x20, id: 20, mode: 0o600, cuid: 0, cgid: 0 });
    await expect(ns.createQueue({ key: 0x21, id: 20, mode: 0o600, cuid: 500, cgid: 500 })).rejects.toMatchObject({ code: 'E_ID_MISMATCH' });
    expect(strayThreads(host)).toEqual([]);
    await ns.removeQueue(id);
    await expect(ns.copyMessages(id, 0, 10, 1000, 64)).rejects.toMatchObject({ code: 'EINVAL' });
    expect(strayThreads(host)).toEqual([]);
    await expect(ns.setQueue(id, { uid: 0, gid: 0, mode: 0, qbytes: 1 })).rejects.toMatchObject({ code: 'EINVAL' });
    expect(strayThreads(host)).toEqual([]);
    // The session still works after its failures.
    expect(await ns.createQueue({ key: 0x22, id: 22, mode: 0o600, cuid: 0, cgid: 0 })).toBe(22);
    await ns.close();
    expect(await ourSessionThreadsAfterExit()).toEqual([]);
    expect(strayThreads(host)).toEqual([]);
  });

  it("'' stays in the caller's own namespace", async () => {
    const ns = await loadNative().openNamespace('');
    expect(ns.path).toBe('');
    expect(ourSessionThreads().map((thread) => thread.ipc)).toEqual([host]);
    const read = (name: string) => Number(readFileSync(`/proc/sys/kernel/${name}`, 'utf8'));
    expect(await ns.readSysctls()).toMatchObject({ msgmax: read('msgmax'), msgmnb: read('msgmnb'), msgmni: read('msgmni') });
    await expect(ns.statQueue(2147483647)).rejects.toMatchObject({ message: expect.stringContaining("in the caller's IPC namespace") });
    await ns.close();
    expect(await ourSessionThreadsAfterExit()).toEqual([]);
  });

  describe('bad targets', () => {
    let directory: string;
    beforeEach(() => {
      directory = mkdtempSync(path.join(tmpdir(), 'ipc-ckpt-native-'));
    });
    afterEach(async () => {
      rmSync(directory, { recursive: true, force: true });
      expect(await ourSessionThreadsAfterExit()).toEqual([]);
      expect(strayThreads(host)).toEqual([]);
    });

    it('rejects a regular file as not a namespace file, naming it', async () => {
      const file = path.join(directory, 'not-a-namespace');
      writeFileSync(file, 'ipc');
      await expect(loadNative().openNamespace(file)).rejects.toMatchObject({
        code: 'E_TARGET',
        message: `${file} is not a namespace file (expected /proc/PID/ns/ipc or a bind mount of one)`,
      });
      await expect(loadNative().openNamespace(directory)).rejects.toMatchObject({ code: 'E_TARGET', message: expect.stringContaining(directory) });
    });

    it('rejects the net namespace of a process as not an IPC namespace', async () => {
      const file = `/proc/${target.pid}/ns/net`;
      await expect(loadNative().openNamespace(file)).rejects.toMatchObject({
        code: 'E_TARGET',
        errno: 0,
        message: `${file} is a net namespace, not an IPC namespace`,
      });
    });

    it('rejects the IPC namespace of a process that does not exist', async () => {
      const gone = spawnSync('true').pid;
      const file = `/proc/${gone}/ns/ipc`;
      await expect(loadNative().openNamespace(file)).rejects.toMatchObject({
        code: 'ENOENT',
        errno: 2,
        syscall: 'open',
        message: `cannot open the IPC namespace file ${file}: No such file or directory`,
      });
    });
  });

  it('an idle open session does not keep the process alive, and exits cleanly', () => {
    const output = runNode(`
      const native = require(process.env.ADDON_FILE);
      (async () => {
        const own = await native.openNamespace('');
        const foreign = await native.openNamespace(${JSON.stringify(target.path)});
        await foreign.listQueues();
        await own.readSysctls();
        console.log('idle with', foreign.path);
      })();
    `);
    expect(output.trim()).toBe(`idle with ${target.path}`);
  });

  it('process.exit() with calls in flight ends the session threads cleanly', () => {
    const output = runNode(`
      const native = require(process.env.ADDON_FILE);
      (async () => {
        const foreign = await native.openNamespace(${JSON.stringify(target.path)});
        for (let index = 0; index < 50; index++) foreign.listQueues();
        native.openNamespace('');
        console.log('exiting');
        process.exit(0);
      })();
    `);
    expect(output.trim()).toBe('exiting');
  });

  it('a session collected without close() ends its thread', () => {
    const output = runNode(
      `
      const fs = require('fs');
      const native = require(process.env.ADDON_FILE);
      const sessionThreads = () => fs.readdirSync('/proc/self/task').filter((tid) => {
        try { return fs.readFileSync('/proc/self/task/' + tid + '/comm', 'utf8').trim() === ${JSON.stringify(SESSION_THREAD_NAME)}; }
        catch { return false; }
      }).length;
      (async () => {
        let ns = await native.openNamespace(${JSON.stringify(target.path)});
        await ns.listQueues();
        const open = sessionThreads();
        ns = null;
        for (let attempt = 0; attempt < 200 && sessionThreads() > 0; attempt++) {
          global.gc();
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
        console.log(JSON.stringify({ open, collected: sessionThreads() }));
      })();
    `,
      ['--expose-gc'],
    );
    expect(JSON.parse(output)).toEqual({ open: 1, collected: 0 });
  });

  it('loads the addon the loader names (IPC_CKPT_ADDON, else build/Release or the glibc prebuild)', () => {
    const expected = process.env.IPC_CKPT_ADDON
      ? path.resolve(process.env.IPC_CKPT_ADDON)
      : expect.stringMatching(/(build\/Release\/ipc_ckpt|prebuilds\/linux-x64\/ipc-ckpt\.glibc)\.node$/);
    expect(addonFile()).toEqual(expected);
  });
});
