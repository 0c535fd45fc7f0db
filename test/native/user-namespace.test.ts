// The owning user namespace of an IPC namespace, and sysctl writes as another euid, on the session thread only.
import { existsSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadNative } from '../../lib/native';
import { TestNamespace } from '../support/namespace';
import { bindNamespaceFile, UserNamespacedIpc } from '../support/user-namespace';
import { sessionThreads } from './session-threads';

const EACCES = 13;

/** Effective uid and gid of every thread of this process (from /proc/self/task/TID/status). */
function threadEffectiveIds(): string[] {
  return sessionThreads().map(({ tid }) => {
    const status = readFileSync(`/proc/self/task/${tid}/status`, 'utf8');
    return `${/^Uid:\s+\d+\s+(\d+)/m.exec(status)![1]}:${/^Gid:\s+\d+\s+(\d+)/m.exec(status)![1]}`;
  });
}

describe('userNamespace()', () => {
  it('is the caller\'s own for the caller\'s namespace and a plain unshare --ipc one, with no maps read', async () => {
    const plain = await TestNamespace.create();
    try {
      for (const nsPath of ['', plain.path]) {
        const ns = await loadNative().openNamespace(nsPath);
        const owner = await ns.userNamespace();
        await ns.close();
        expect(owner).toMatchObject({ callerOwn: true, mapSource: 'own', uidMap: '', gidMap: '' });
        expect(owner.inode).toBe(String(statSync('/proc/self/ns/user').ino));
      }
    } finally {
      await plain.destroy();
    }
  });

  it('reads the maps of a user-namespaced IPC namespace from a process living there', async () => {
    const container = await UserNamespacedIpc.create('0 100000 65536', '0 100000 1000\n1000 400000 10');
    try {
      const ns = await loadNative().openNamespace(container.path);
      const owner = await ns.userNamespace();
      await ns.close();
      expect(owner).toMatchObject({ callerOwn: false, mapSource: 'process', mapPid: container.pid });
      expect(owner.inode).toBe(/\[(\d+)\]/.exec(readlinkSync(`/proc/${container.pid}/ns/user`))![1]);
      expect(owner.uidMap.trim().split(/\s+/)).toEqual(['0', '100000', '65536']);
      expect(owner.gidMap.trim().split(/\s+/)).toEqual(['0', '100000', '1000', '1000', '400000', '10']);
    } finally {
      await container.destroy();
    }
  });

  it('with no process left (a bind-mounted nsfs file), reads them through a short-lived child that it reaps', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ipc-ckpt-owner-'));
    const container = await UserNamespacedIpc.create('0 300000 1000');
    const file = path.join(dir, 'ipc');
    const unmount = bindNamespaceFile(container.path, file);
    try {
      await container.destroy();
      const ns = await loadNative().openNamespace(file);
      const owner = await ns.userNamespace();
      expect(owner).toMatchObject({ callerOwn: false, mapSource: 'child' });
      expect(owner.uidMap.trim().split(/\s+/)).toEqual(['0', '300000', '1000']);
      // Waited for: neither running nor a zombie.
      expect(existsSync(`/proc/${owner.mapPid}`)).toBe(false);
      await ns.close();
    } finally {
      unmount();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('writeSysctl(name, value, as)', () => {
  it('writes the limits of a user-namespaced IPC namespace as its root, which host root alone may not, and switches back', async () => {
    const container = await UserNamespacedIpc.create('0 200000 65536');
    const ns = await loadNative().openNamespace(container.path);
    try {
      expect(await ns.sysctlWritable('msgmnb')).toBe(EACCES);
      await expect(ns.writeSysctl('msgmnb', 40000)).rejects.toMatchObject({ code: 'EACCES', syscall: 'open' });
      const root = { uid: 200000, gid: 200000 };
      expect(await ns.sysctlWritable('msgmnb', root)).toBe(0);
      await ns.writeSysctl('msgmnb', 40000, root);
      expect(container.dumpInside().limits.msgmnb).toBe(40000);
      // msg_next_id needs CAP_CHECKPOINT_RESTORE over the namespace, which root's own ids have.
      expect(await ns.sysctlWritable('msg_next_id')).toBe(0);
      expect(threadEffectiveIds()).toEqual(['0:0']);
      // A refused write as another uid leaves the thread with its own ids too.
      await expect(ns.writeSysctl('msgmnb', 30000, { uid: 201000, gid: 201000 })).rejects.toMatchObject({ code: 'EACCES', message: expect.stringMatching(/write 30000 to \/proc\/sys\/kernel\/msgmnb as uid 201000 gid 201000/) });
      expect(threadEffectiveIds()).toEqual(['0:0']);
      await expect(ns.writeSysctl('msgmnb', 1, { uid: 200000 } as never)).rejects.toMatchObject({ code: 'E_INTERNAL', message: expect.stringMatching(/writeSysctl: as.gid must be an integer/) });
    } finally {
      await ns.close();
      await container.destroy();
    }
  });
});
