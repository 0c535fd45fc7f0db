// Limits and refusals: what restore and save do when the target, the disk or the privileges say no.
// Every refusal is exit 1 with a message naming the cause, and leaves the namespace (and the output
// path) exactly as it was.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { TestNamespace } from '../support/namespace';
import { buildHammer } from '../support/hammer';
import { dumpNamespace, msgqTool } from '../support/msgq-tool';
import { populateSample } from '../support/sample-namespace';
import { CLI, CliResult, runCli } from '../support/cli';
import { encodeImage } from '../../lib/image/encoder';
import { hostHeader } from '../../lib/save';
import type { NamespaceLimits, QueueRecord } from '../../lib/image/model';
import { namespaceState } from './killed-run';

jest.setTimeout(120_000);

/** Drops what setns and msg_next_id need, for the command it runs (util-linux setpriv). */
const WITHOUT_ADMIN = ['setpriv', '--inh-caps=-all', '--bounding-set=-sys_admin,-checkpoint_restore'];
/** The kernel's highest msgmni (IPCMNI without ipcmni_extend): every queue slot. */
const IPCMNI = 32768;
const INT_MAX = 2 ** 31 - 1;
/** A fresh namespace's limits on this kernel (msgmax 8192, msgmnb 16384, msgmni 32000). */
const TARGET_DEFAULT_LIMITS: NamespaceLimits = {
  shmCtlmax: 0n, shmCtlall: 0n, shmCtlmni: 0, msgCtlmax: 8192, msgCtlmnb: 16384, msgCtlmni: 32000, semCtlMsl: 0, semCtlMns: 0, semCtlOpm: 0, semCtlMni: 0,
};

let source: TestNamespace;
let target: TestNamespace;
let dir: string;
let sampleImage: string;
let sampleQueues: number;

beforeAll(async () => {
  source = await TestNamespace.create();
  dir = mkdtempSync(path.join(os.tmpdir(), 'ipc-ckpt-limits-'));
  populateSample(source.path);
  sampleQueues = dumpNamespace(source.path).queues.length;
  sampleImage = path.join(dir, 'sample.img');
  expect(runCli(['save', '--ns', source.path, '-o', sampleImage]).status).toBe(0);
});

afterAll(async () => {
  await source.destroy();
  rmSync(dir, { recursive: true, force: true });
});

beforeEach(async () => {
  target = await TestNamespace.create();
});

afterEach(async () => {
  await target.destroy();
});

/** Runs a command line (argv) inside another one, e.g. setpriv or nsenter, then the CLI. */
function runWrapped(wrapper: string[], args: string[]): CliResult {
  const result = spawnSync(wrapper[0], [...wrapper.slice(1), process.execPath, CLI, ...args], { encoding: 'utf8' });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** An image of one queue with one message and the given qbytes, made by the encoder. */
function imageWithQbytes(qbytes: bigint): string {
  const body = Buffer.from('one message');
  const queue: QueueRecord = {
    id: 7, key: 0x7777, uid: 0, gid: 0, cuid: 0, cgid: 0, mode: 0o600, seq: 0, stime: 0n, rtime: 0n, ctime: 0n,
    cbytes: BigInt(body.length), qnum: 1n, qbytes, lspid: 0, lrpid: 0,
  };
  const file = path.join(dir, `qbytes-${qbytes}.img`);
  writeFileSync(file, encodeImage({ header: hostHeader(0n), limits: TARGET_DEFAULT_LIMITS, queues: [{ queue, messages: [{ type: 1n, body }] }] }));
  return file;
}

describe('limits of the target', () => {
  test('queues already at msgmni: restore raises msgmni for the duration, and --keep-limits leaves it as it was', () => {
    msgqTool(target.path, 'sysctl', 'msgmni', 2);
    msgqTool(target.path, 'create', '0x9001', '600', '--id', 300);
    msgqTool(target.path, 'create', '0x9002', '600', '--id', 301);
    expect(() => msgqTool(target.path, 'create', '0x9003', '600')).toThrow(/No space left on device/);

    const result = runCli(['restore', '--ns', target.path, '-i', sampleImage, '--keep-limits']);
    expect(result.stderr).toMatch(`restored ${sampleQueues} queue(s)`);
    expect(result.status).toBe(0);
    const after = namespaceState(target);
    expect(after.queues).toHaveLength(sampleQueues + 2);
    expect(after.limits.msgmni).toBe(2);
    expect(after.msgNextId).toBe(-1);
    // The kernel keeps queues beyond msgmni; it only refuses new ones, as before the restore.
    expect(() => msgqTool(target.path, 'create', '0x9003', '600')).toThrow(/No space left on device/);
  });

  test('every queue slot taken: E_CONFLICT before any change', () => {
    msgqTool(target.path, 'sysctl', 'msgmni', IPCMNI);
    expect(execFileSync('nsenter', [`--ipc=${target.path}`, '--', buildHammer(), 'create-many', String(IPCMNI)], { encoding: 'utf8' }).trim()).toBe(String(IPCMNI));
    const before = namespaceState(target);
    const result = runCli(['restore', '--ns', target.path, '-i', sampleImage]);
    expect(result.stderr).toMatch(/cannot restore into .*nothing was changed:\n {2}id \d+ .*slot \d+ is taken by queue/);
    expect(result.status).toBe(1);
    expect(namespaceState(target)).toEqual(before);
  });

  test('a queue whose qbytes no msgmnb can reach (above INT_MAX, needs CAP_SYS_RESOURCE) is refused and nothing changes', () => {
    const before = namespaceState(target);
    const result = runCli(['restore', '--ns', target.path, '-i', imageWithQbytes(BigInt(INT_MAX) + 1n)]);
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/^ipc-ckpt: /);
    expect(namespaceState(target)).toEqual(before);
  });

  test('that refusal names the queue, its qbytes and why', () => {
    const result = runCli(['restore', '--ns', target.path, '-i', imageWithQbytes(BigInt(INT_MAX) + 1n)]);
    expect(result.stderr).toMatch(/queue (id )?7\b.*qbytes 2147483648/);
  });
});

describe('a read-only /proc/sys (as inside a container)', () => {
  /** Runs the CLI in a private mount namespace whose /proc/sys is a read-only bind mount. */
  function withReadOnlySysctls(args: string[]): CliResult {
    const script = 'mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && exec "$@"';
    return runWrapped(['unshare', '--mount', '--propagation', 'private', 'sh', '-c', script, 'sh'], args);
  }

  test('restore fails with EROFS naming the file, and changes nothing', () => {
    const before = namespaceState(target);
    const result = withReadOnlySysctls(['restore', '--ns', target.path, '-i', sampleImage]);
    expect(result.stderr).toMatch(/\/proc\/sys\/kernel\/msg\w+.*(Read-only file system|EROFS)/);
    expect(result.status).toBe(1);
    expect(namespaceState(target)).toEqual(before);
  });

  test('save of a message above msgmax fails with EROFS, leaves no file and the namespace as it was', () => {
    const before = namespaceState(source);
    const output = path.join(dir, 'ro', 'q.img');
    mkdirSync(path.dirname(output));
    const result = withReadOnlySysctls(['save', '--ns', source.path, '-o', output]);
    expect(result.stderr).toMatch(/\/proc\/sys\/kernel\/msgmax.*(Read-only file system|EROFS)/);
    expect(result.status).toBe(1);
    expect(readdirSync(path.dirname(output))).toEqual([]);
    expect(namespaceState(source)).toEqual(before);
  });
});

describe('a full disk', () => {
  let mountPoint: string;

  beforeEach(() => {
    mountPoint = mkdtempSync(path.join(os.tmpdir(), 'ipc-ckpt-full-'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', mountPoint]);
  });

  afterEach(() => {
    execFileSync('umount', [mountPoint]);
    rmSync(mountPoint, { recursive: true });
  });

  test('save fails with ENOSPC, leaves the previous image whole and no temporary, and the namespace as it was', () => {
    expect(readFileSync(sampleImage).length).toBeGreaterThan(64 * 1024);
    const output = path.join(mountPoint, 'q.img');
    const previous = Buffer.from('a previous file the failed save must not touch\n');
    writeFileSync(output, previous);
    const before = namespaceState(source);
    const result = runCli(['save', '--ns', source.path, '-o', output]);
    expect(result.stderr).toMatch(/ENOSPC|No space left on device/);
    expect(result.stderr).toContain(output);
    expect(result.status).toBe(1);
    expect(readdirSync(mountPoint)).toEqual(['q.img']);
    expect(readFileSync(output)).toEqual(previous);
    expect(namespaceState(source)).toEqual(before);
  });
});

describe('missing privileges (no CAP_SYS_ADMIN, no CAP_CHECKPOINT_RESTORE)', () => {
  test('save of another namespace fails at setns with EPERM and writes nothing', () => {
    const output = path.join(dir, 'noprivs.img');
    const result = runWrapped(WITHOUT_ADMIN, ['save', '--ns', source.path, '-o', output]);
    expect(result.stderr).toMatch(/cannot enter the IPC namespace .*(Operation not permitted|EPERM)/);
    expect(result.status).toBe(1);
    expect(readdirSync(dir).filter((name) => name.includes('noprivs'))).toEqual([]);
  });

  test('restore into another namespace fails at setns with EPERM and changes nothing', () => {
    const before = namespaceState(target);
    const result = runWrapped(WITHOUT_ADMIN, ['restore', '--ns', target.path, '-i', sampleImage]);
    expect(result.stderr).toMatch(/cannot enter the IPC namespace .*(Operation not permitted|EPERM)/);
    expect(result.status).toBe(1);
    expect(namespaceState(target)).toEqual(before);
  });

  test('restore inside the namespace cannot write msg_next_id: it fails naming the file and rolls back the raised limits', () => {
    const before = namespaceState(target);
    const result = runWrapped(['nsenter', `--ipc=${target.path}`, '--', ...WITHOUT_ADMIN], ['restore', '-i', sampleImage]);
    expect(result.stderr).toMatch(/\/proc\/sys\/kernel\/msg_next_id.*(Permission denied|Operation not permitted)/);
    expect(result.status).toBe(1);
    expect(namespaceState(target)).toEqual(before);
  });

  test('check says both cannot work, and why', () => {
    const result = runWrapped(WITHOUT_ADMIN, ['check', '--ns', target.path]);
    expect(result.stdout).toMatch(/fail +setns: .*Operation not permitted/);
    expect(result.stdout).toMatch(/save: cannot work; restore: cannot work/);
    expect(result.status).toBe(1);
  });
});
