// The msg sysctls and the probe run on the session thread, so they see the target namespace only.
import { readFileSync } from 'node:fs';
import { loadNative, MsgSysctlName, NativeNamespace } from '../../lib/native';
import { TestNamespace } from '../support/namespace';
import { msgqTool } from '../support/msgq-tool';

const NAMES: MsgSysctlName[] = ['msgmax', 'msgmnb', 'msgmni', 'msg_next_id'];

function hostSysctls(): Record<string, number> {
  return Object.fromEntries(NAMES.map((name) => [name, Number(readFileSync(`/proc/sys/kernel/${name}`, 'utf8'))]));
}

function sysctlIn(nsPath: string, name: string): number {
  return Number(msgqTool(nsPath, 'sysctl', name).trim());
}

function capEff(): bigint {
  return BigInt(`0x${/CapEff:\s*([0-9a-f]+)/.exec(readFileSync('/proc/self/status', 'utf8'))![1]}`);
}

describe('native sysctls and probe', () => {
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

  it('reads the msg limits of the target namespace', async () => {
    msgqTool(target.path, 'sysctl', 'msgmnb', 23456);
    expect(await ns.readSysctls()).toMatchObject({
      msgmax: sysctlIn(target.path, 'msgmax'),
      msgmnb: 23456,
      msgmni: sysctlIn(target.path, 'msgmni'),
    });
  });

  it('reads the shm and sem limits that the IPC_NS record holds, from the target namespace', async () => {
    const { execFileSync } = await import('node:child_process');
    const cat = (name: string) => execFileSync('nsenter', [`--ipc=${target.path}`, 'cat', `/proc/sys/kernel/${name}`], { encoding: 'utf8' }).trim();
    execFileSync('nsenter', [`--ipc=${target.path}`, 'sh', '-c', 'echo 250 64000 32 77 > /proc/sys/kernel/sem; echo 1234567 > /proc/sys/kernel/shmmax']);
    const [semmsl, semmns, semopm, semmni] = cat('sem').split(/\s+/).map(Number);
    expect(await ns.readSysctls()).toMatchObject({ shmmax: 1234567n, shmall: BigInt(cat('shmall')), shmmni: Number(cat('shmmni')), semmsl, semmns, semopm, semmni });
    expect(semmni).toBe(77);
  });

  it('writes msgmax, msgmnb, msgmni and msg_next_id in the target namespace only', async () => {
    const host = hostSysctls();
    await ns.writeSysctl('msgmax', 65536);
    await ns.writeSysctl('msgmnb', 131072);
    await ns.writeSysctl('msgmni', 1234);
    await ns.writeSysctl('msg_next_id', 32768 * 7 + 9);
    expect(await ns.readSysctls()).toMatchObject({ msgmax: 65536, msgmnb: 131072, msgmni: 1234 });
    expect(['msgmax', 'msgmnb', 'msgmni', 'msg_next_id'].map((name) => sysctlIn(target.path, name))).toEqual([65536, 131072, 1234, 32768 * 7 + 9]);
    expect(hostSysctls()).toEqual(host);
    // msg_next_id really steers the next msgget of the namespace.
    expect(Number(msgqTool(target.path, 'create', '0x99', '600').trim())).toBe(32768 * 7 + 9);
  });

  it('reports a refused write with the errno, the file and the namespace', async () => {
    await expect(ns.writeSysctl('msgmni', -5)).rejects.toMatchObject({
      code: 'EINVAL',
      syscall: 'write',
      message: `write -5 to /proc/sys/kernel/msgmni in ${target.path}: Invalid argument`,
    });
    await expect(ns.writeSysctl('shmmax' as MsgSysctlName, 1)).rejects.toMatchObject({ code: 'E_INTERNAL', errno: 0 });
  });

  it('probe finds MSG_COPY, a writable msg_next_id and the thread capabilities', async () => {
    const probe = await ns.probe();
    expect(probe.msgCopyErrno).toBe(0);
    expect(probe.nextIdWritableErrno).toBe(0);
    expect(BigInt(probe.effectiveCapabilities)).toBe(capEff());
  });
});
