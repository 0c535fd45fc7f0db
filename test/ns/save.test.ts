import { mkdtempSync, readFileSync, readlinkSync, existsSync, readdirSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import * as os from 'node:os';
import * as path from 'node:path';
import { TestNamespace } from '../support/namespace';
import { dumpNamespace, msgqTool, receiveMessage } from '../support/msgq-tool';
import { populateSample, SAMPLE_LIMITS, BIG_MESSAGE_BYTES } from '../support/sample-namespace';
import { runCli } from '../support/cli';
import { save, IpcCkptError } from '../../lib';

jest.setTimeout(60_000);

let ns: TestNamespace;
let dir: string;

beforeEach(async () => {
  ns = await TestNamespace.create();
  dir = mkdtempSync(path.join(os.tmpdir(), 'ipc-ckpt-save-'));
});

afterEach(async () => {
  await ns.destroy();
});

interface InspectedQueue {
  [field: string]: unknown;
  messages?: Array<{ type: string; size: number; body: string }>;
}

function inspectJson(image: string): { limits: Record<string, unknown>; queues: InspectedQueue[] } {
  const result = runCli(['inspect', '--json', '--messages', image]);
  expect(result.stderr).toBe('');
  expect(result.status).toBe(0);
  return JSON.parse(result.stdout);
}

/** Reads a field whatever way inspect spells it (number or decimal string). */
function num(value: unknown): string {
  return String(typeof value === 'object' && value !== null && 'seconds' in value ? value.seconds : value);
}

test('saves every field and message of a namespace exactly, and leaves the namespace as it was', () => {
  populateSample(ns.path);
  const before = dumpNamespace(ns.path);
  const image = path.join(dir, 'q.img');
  const result = runCli(['save', '--ns', ns.path, '-o', image]);
  expect(result.stderr).toMatch(/saved 5 queue\(s\), 8 message\(s\)/);
  expect(result.stderr).toMatch(/msgmax raised for the copy and put back/);
  expect(result.status).toBe(0);

  const after = dumpNamespace(ns.path);
  expect(after).toEqual(before);
  expect(after.limits.msgmax).toBe(SAMPLE_LIMITS.msgmax);

  const report = inspectJson(image);
  expect(num(report.limits.msgCtlmax)).toBe(String(SAMPLE_LIMITS.msgmax));
  expect(num(report.limits.msgCtlmnb)).toBe(String(SAMPLE_LIMITS.msgmnb));
  expect(num(report.limits.msgCtlmni)).toBe(String(SAMPLE_LIMITS.msgmni));
  expect(report.queues).toHaveLength(before.queues.length);
  before.queues.forEach((live, i) => {
    const saved = report.queues[i];
    for (const field of ['id', 'key', 'uid', 'gid', 'cuid', 'cgid', 'mode', 'qbytes', 'qnum', 'cbytes', 'stime', 'rtime', 'ctime', 'lspid', 'lrpid'] as const) {
      expect([field, num(saved[field])]).toEqual([field, String(live[field])]);
    }
    expect(saved.messages?.map((m) => [m.type, m.size, Buffer.from(m.body, 'base64').toString('hex')])).toEqual(live.messages.map((m) => [m.type, m.size, m.hex]));
  });
  // The cases the sample promises are really there.
  const sizes = before.queues.flatMap((q) => q.messages.map((m) => m.size));
  expect(sizes).toEqual(expect.arrayContaining([0, 1, SAMPLE_LIMITS.msgmax, BIG_MESSAGE_BYTES]));
  expect(before.queues.map((q) => q.mode)).toEqual(expect.arrayContaining([0o600, 0o640, 0o000]));
  expect(before.queues.some((q) => q.key === 0)).toBe(true);
  expect(before.queues.some((q) => q.id >= 32768)).toBe(true);
});

test('saves the caller namespace by default and a process namespace with -t PID', () => {
  msgqTool(ns.path, 'create', '0x4242', '600');
  const byPid = path.join(dir, 'pid.img');
  expect(runCli(['save', '-t', String(ns.pid), '-o', byPid]).status).toBe(0);
  expect(inspectJson(byPid).queues.map((q) => num(q.key))).toEqual([String(0x4242)]);
  // The default target is the caller's own namespace: run the CLI inside the test namespace.
  const own = path.join(dir, 'own.img');
  execFileSync('nsenter', [`--ipc=${ns.path}`, '--', process.execPath, path.resolve(__dirname, '../../bin/ipc-ckpt.js'), 'save', '-q', '-o', own]);
  expect(readFileSync(own).subarray(16).length).toBeGreaterThan(0);
  expect(inspectJson(own).queues.map((q) => num(q.key))).toEqual([String(0x4242)]);
});

test('save through the API writes to a stream and reports a summary', async () => {
  msgqTool(ns.path, 'sysctl', 'msgmnb', 1 << 20);
  const id = Number(msgqTool(ns.path, 'create', '0x77', '600').trim());
  msgqTool(ns.path, 'send-many', id, 5000, 64, 5);
  const chunks: Buffer[] = [];
  const { PassThrough } = await import('node:stream');
  const stream = new PassThrough();
  stream.on('data', (chunk: Buffer) => chunks.push(chunk));
  const summary = await save({ ns: ns.path }, stream, { batchBytes: 4096 });
  expect(summary).toMatchObject({ queues: 1, messages: 5000, messageBytes: 5000 * 64, retries: 0, msgmaxRaised: false });
  expect(summary.imageBytes).toBe(Buffer.concat(chunks).length);
});

test('a failed save leaves no file and no temporary behind', async () => {
  const image = path.join(dir, 'never.img');
  await expect(save({ ns: '/proc/self/ns/net' }, image)).rejects.toThrow(IpcCkptError);
  expect(existsSync(image)).toBe(false);
  expect(readdirSync(dir)).toEqual([]);
});

test('queues of every batch shape (grouped small ones, one alone in its batch, one too large for a batch) restore exactly', async () => {
  const kib = 1024;
  msgqTool(ns.path, 'sysctl', 'msgmax', 8 * kib);
  msgqTool(ns.path, 'sysctl', 'msgmnb', 2048 * kib);
  // 2 KiB queues share batches; a 200 KiB one is over the 128 KiB group bound but within the 1 MiB batch;
  // a 1.5 MiB one is copied alone.
  const shapes = [...Array(40).fill([4, 500]), [25, 8 * kib], ...Array(20).fill([4, 500]), [192, 8 * kib], ...Array(40).fill([4, 500])] as Array<[number, number]>;
  shapes.forEach(([count, size], k) => {
    const id = Number(msgqTool(ns.path, 'create', `0x${(0x5100 + k).toString(16)}`, '600').trim());
    if (count * size > 16384) msgqTool(ns.path, 'set', id, 0, 0, '600', 2048 * kib);
    msgqTool(ns.path, 'send-many', id, count, size, k + 1);
  });
  const image = path.join(dir, 'shapes.img');
  const summary = await save({ ns: ns.path }, image);
  expect(summary).toMatchObject({ queues: shapes.length, messages: shapes.reduce((n, [count]) => n + count, 0) });
  const target = await TestNamespace.create();
  try {
    expect(runCli(['restore', '--ns', target.path, '-i', image, '-q']).status).toBe(0);
    const restorable = (dump: ReturnType<typeof dumpNamespace>) => dump.queues.map(({ stime, rtime, ctime, lspid, lrpid, ...rest }) => (void [stime, rtime, ctime, lspid, lrpid], rest));
    expect(restorable(dumpNamespace(target.path))).toEqual(restorable(dumpNamespace(ns.path)));
  } finally {
    await target.destroy();
  }
});

test('a save over an existing image replaces it whole and keeps no descriptor of the replaced one open', async () => {
  const id = Number(msgqTool(ns.path, 'create', '0x52', '600').trim());
  msgqTool(ns.path, 'send-many', id, 3, 100, 4);
  const image = path.join(dir, 'q.img');
  writeFileSync(image, Buffer.alloc(1 << 20, 0xee));
  const replaced = readdirSync('/proc/self/fd').length;
  const summary = await save({ ns: ns.path }, image);
  expect(readFileSync(image).length).toBe(summary.imageBytes);
  expect(runCli(['verify', '--ns', ns.path, '-i', image]).status).toBe(0);
  // The replaced file was held open across the rename; it must be closed, not left as a deleted file.
  const openDeleted = readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`).endsWith('(deleted)');
    } catch {
      return false;
    }
  });
  expect(openDeleted).toEqual([]);
  expect(readdirSync('/proc/self/fd').length).toBeLessThanOrEqual(replaced);
  expect(readdirSync(dir)).toEqual(['q.img']);
});

test('bad targets exit 1 with a clear message, usage errors exit 2, and no file is left', () => {
  const notNs = path.join(dir, 'plain');
  writeFileSync(notNs, 'x');
  for (const args of [['--ns', notNs], ['--ns', '/proc/self/ns/net'], ['-t', '999999999']]) {
    const result = runCli(['save', ...args, '-o', path.join(dir, 'x.img')]);
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/ipc-ckpt: .*(not an IPC namespace|not a namespace file|does not exist|no process)/);
  }
  expect(runCli(['save', '--bogus']).status).toBe(2);
  expect(runCli(['save', '-t', 'abc']).status).toBe(2);
  expect(readdirSync(dir)).toEqual(['plain']);
});

test('an image over 64 MiB, synced to disk in the background while it is written, saves whole: its restore verifies equal', async () => {
  const messageBytes = 65536;
  const count = 1100;
  msgqTool(ns.path, 'sysctl', 'msgmax', messageBytes);
  msgqTool(ns.path, 'sysctl', 'msgmnb', messageBytes * count);
  const id = Number(msgqTool(ns.path, 'create', '0x6464', '600').trim());
  msgqTool(ns.path, 'set', id, 0, 0, '600', messageBytes * count);
  msgqTool(ns.path, 'send-many', id, count, messageBytes, 7);
  const image = path.join(dir, 'big.img');
  const summary = await save({ ns: ns.path }, image);
  expect(summary.messageBytes).toBe(messageBytes * count);
  const target = await TestNamespace.create();
  try {
    expect(runCli(['restore', '--ns', target.path, '-i', image, '-q']).status).toBe(0);
    expect(runCli(['verify', '--ns', target.path, '-i', image]).status).toBe(0);
    // The independent tool agrees: the same queue, and the same first message.
    const restorable = (nsPath: string) => {
      const { stime, rtime, ctime, lspid, lrpid, ...rest } = JSON.parse(msgqTool(nsPath, 'stat', id)) as Record<string, number>;
      void [stime, rtime, ctime, lspid, lrpid];
      return rest;
    };
    expect(restorable(target.path)).toEqual(restorable(ns.path));
    expect(receiveMessage(target.path, id, 7)).toEqual(receiveMessage(ns.path, id, 7));
  } finally {
    await target.destroy();
  }
});
