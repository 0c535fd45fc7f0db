import { mkdtempSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { TestNamespace } from '../support/namespace';
import { dumpNamespace, msgqTool, NamespaceDump } from '../support/msgq-tool';
import { populateSample, SAMPLE_LIMITS } from '../support/sample-namespace';
import { CLI, runCli } from '../support/cli';
import { restore, save, verify, IpcCkptError } from '../../lib';

jest.setTimeout(60_000);

const RESTORABLE = ['id', 'key', 'uid', 'gid', 'cuid', 'cgid', 'mode', 'qbytes', 'qnum', 'cbytes'] as const;

function restorableView(dump: NamespaceDump) {
  return {
    limits: dump.limits,
    queues: dump.queues.map((q) => ({ ...Object.fromEntries(RESTORABLE.map((f) => [f, q[f]])), messages: q.messages })),
  };
}

let source: TestNamespace;
let target: TestNamespace;
let dir: string;

beforeEach(async () => {
  [source, target] = await Promise.all([TestNamespace.create(), TestNamespace.create()]);
  dir = mkdtempSync(path.join(os.tmpdir(), 'ipc-ckpt-restore-'));
});

afterEach(async () => {
  await Promise.all([source.destroy(), target.destroy()]);
});

function saveSample(): string {
  populateSample(source.path);
  const image = path.join(dir, 'q.img');
  const saved = runCli(['save', '--ns', source.path, '-o', image]);
  expect(saved.status).toBe(0);
  return image;
}

test('restores every restorable field and message into a fresh namespace, and verify agrees', () => {
  const image = saveSample();
  const restored = runCli(['restore', '--ns', target.path, '-i', image]);
  expect(restored.stderr).toMatch(/restored 5 queue\(s\), 8 message\(s\).*not restorable from userspace.*stime, rtime, ctime, lspid, lrpid/);
  expect(restored.status).toBe(0);
  expect(restorableView(dumpNamespace(target.path))).toEqual(restorableView(dumpNamespace(source.path)));
  expect(dumpNamespace(target.path).limits).toEqual(SAMPLE_LIMITS);

  const verified = runCli(['verify', '--ns', target.path, '-i', image]);
  expect(verified.stdout).toMatch(/^equal: 5 queue\(s\), 8 message\(s\)/);
  expect(verified.status).toBe(0);
});

test('verify reports a missing message and a changed owner, and exits 1', () => {
  const image = saveSample();
  expect(runCli(['restore', '--ns', target.path, '-i', image, '-q']).status).toBe(0);
  const queues = dumpNamespace(target.path).queues;
  const first = queues.find((q) => q.key === 0x1001)!;
  const second = queues.find((q) => q.key === 0x1002)!;
  msgqTool(target.path, 'recv', first.id, 0, '--nowait');
  msgqTool(target.path, 'set', second.id, 3000, second.gid, second.mode.toString(8), second.qbytes);
  const verified = runCli(['verify', '--ns', target.path, '-i', image]);
  expect(verified.status).toBe(1);
  expect(verified.stdout).toMatch(new RegExp(`queue ${second.id}: uid is 3000, the image has 2000`));
  expect(verified.stdout).toMatch(new RegExp(`queue ${first.id}: qnum is 3, the image has 4`));
});

test('restore --keep-limits keeps the target limits; --dry-run changes nothing', async () => {
  const image = saveSample();
  const untouched = dumpNamespace(target.path);
  const dry = runCli(['restore', '--ns', target.path, '-i', image, '--dry-run']);
  expect(dry.status).toBe(0);
  expect(dry.stderr).toMatch(/dry run/);
  expect(dry.stderr).toMatch(/create queue id 98309 key 0x00001001 mode 0600/);
  expect(dumpNamespace(target.path)).toEqual(untouched);

  await restore({ ns: target.path }, image, { keepLimits: true });
  expect(dumpNamespace(target.path).limits).toEqual(untouched.limits);
  expect((await verify({ ns: target.path }, image)).equal).toBe(false);
  expect(await verify({ ns: target.path }, image, { ignoreLimits: true })).toMatchObject({ equal: true, differences: [] });
});

test('a conflicting key or id fails before any change, naming every conflict', async () => {
  const image = saveSample();
  msgqTool(target.path, 'create', '0x1002', '600');
  msgqTool(target.path, 'create', '0x9999', '600', '--id', 3 * 32768 + 5);
  const before = dumpNamespace(target.path);
  const result = runCli(['restore', '--ns', target.path, '-i', image]);
  expect(result.status).toBe(1);
  expect(result.stderr).toMatch(/nothing was changed/);
  expect(result.stderr).toMatch(/queue 0 \(key 0x00001002\)/);
  expect(result.stderr).toMatch(/slot 5 is taken/);
  expect(dumpNamespace(target.path)).toEqual(before);
  await expect(restore({ ns: target.path }, image)).rejects.toMatchObject({ code: 'E_CONFLICT' });
});

test('a failure midway leaves the target exactly as before, queues and sysctls', () => {
  const image = saveSample();
  msgqTool(target.path, 'create', '0x5555', '600', '--id', 100);
  const before = dumpNamespace(target.path);
  for (const after of [1, 3]) {
    const result = runCli(['restore', '--ns', target.path, '-i', image], { env: { IPC_CKPT_TEST_FAULT: `after-queue:${after}` } });
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/injected fault/);
    expect(dumpNamespace(target.path)).toEqual(before);
  }
});

test('a queue that appears in the target after validation makes the restore roll back', async () => {
  const image = saveSample();
  const before = dumpNamespace(target.path);
  const last = dumpNamespace(source.path).queues.at(-1)!;
  let intruder: number | undefined;
  // While the first queues are being filled, another process takes the slot the last queue needs.
  const error = await restore({ ns: target.path }, image, {
    onProgress: () => {
      intruder ??= Number(msgqTool(target.path, 'create', '0x6666', '600', '--id', last.id).trim());
    },
  }).catch((e: unknown) => e);
  expect(intruder).toBe(last.id);
  expect(error).toBeInstanceOf(IpcCkptError);
  expect((error as IpcCkptError).code).toBe('E_ID_MISMATCH');
  const now = dumpNamespace(target.path);
  expect(now.queues.map((q) => [q.id, q.key])).toEqual([[last.id, 0x6666]]);
  expect(now.limits).toEqual(before.limits);
});

test('save -t A | restore -t B through a pipe', () => {
  populateSample(source.path);
  execFileSync('sh', ['-c', `"${process.execPath}" "${CLI}" save -q -t ${source.pid} | "${process.execPath}" "${CLI}" restore -q -t ${target.pid}`]);
  expect(restorableView(dumpNamespace(target.path))).toEqual(restorableView(dumpNamespace(source.path)));
});

test('the API round trip through streams', async () => {
  populateSample(source.path);
  const { PassThrough } = await import('node:stream');
  const pipe = new PassThrough();
  const [saved, restored] = await Promise.all([save({ pid: source.pid }, pipe), restore({ pid: target.pid }, pipe)]);
  expect(restored.messages).toBe(saved.messages);
  expect(restorableView(dumpNamespace(target.path))).toEqual(restorableView(dumpNamespace(source.path)));
});
