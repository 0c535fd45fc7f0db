// The test oracle itself must be right: these prove msgq-tool against the real kernel in a fresh namespace.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { TestNamespace } from '../support/namespace';
import { buildMsgqTool, dumpNamespace, msgqTool, MsgqToolError, patternBody, receiveMessage } from '../support/msgq-tool';

describe('msgq-tool', () => {
  let ns: TestNamespace;
  beforeEach(async () => {
    ns = await TestNamespace.create();
  });
  afterEach(async () => {
    await ns.destroy();
  });

  it('creates a queue with the wanted id and shows it in the dump with its messages', () => {
    const id = Number(msgqTool(ns.path, 'create', '0x51a7e', '640', '--id', 32768 * 3 + 17).trim());
    expect(id).toBe(32768 * 3 + 17);
    msgqTool(ns.path, 'send', id, 7, 100, 42);
    msgqTool(ns.path, 'send-hex', id, '9223372036854775807', '00ff10');
    msgqTool(ns.path, 'send-many', id, 3, 16, 2);

    const dump = dumpNamespace(ns.path);
    expect(dump.limits).toEqual({ msgmax: 8192, msgmnb: 16384, msgmni: expect.any(Number) });
    expect(dump.queues).toHaveLength(1);
    const [queue] = dump.queues;
    expect(queue).toMatchObject({ id, key: 0x51a7e, mode: 0o640, uid: 0, cuid: 0, qnum: 5, cbytes: 100 + 3 + 48 });
    expect(queue.messages.map((m) => [m.type, m.size])).toEqual([
      ['7', 100],
      ['9223372036854775807', 3],
      ['2', 16],
      ['2', 16],
      ['2', 16],
    ]);
    expect(queue.messages[0].hex).toBe(patternBody(100, 42).toString('hex'));
    expect(queue.messages[1].hex).toBe('00ff10');
    // send-many puts the sequence number in the first 8 bytes, so every message differs.
    expect(new Set(queue.messages.slice(2).map((m) => m.hex)).size).toBe(3);
    expect(queue.messages[3].hex.slice(0, 16)).toBe('0100000000000000');
  });

  it('dumps non-destructively: qnum, rtime and lrpid stay as they were', () => {
    const id = Number(msgqTool(ns.path, 'create', 0, '600').trim());
    msgqTool(ns.path, 'send', id, 1, 10, 1);
    msgqTool(ns.path, 'send', id, 2, 20, 2);
    const first = dumpNamespace(ns.path).queues[0];
    const second = dumpNamespace(ns.path).queues[0];
    expect(first.key).toBe(0);
    expect(second.qnum).toBe(2);
    expect(second.rtime).toBe(0);
    expect(second.lrpid).toBe(0);
    expect(second).toEqual(first);
  });

  it('receives by type and removes what it received', () => {
    const id = Number(msgqTool(ns.path, 'create', 1234, '600').trim());
    msgqTool(ns.path, 'send', id, 1, 10, 1);
    msgqTool(ns.path, 'send', id, 2, 300, 2);
    const received = receiveMessage(ns.path, id, 2);
    expect(received).toEqual({
      type: 2n,
      size: 300,
      sha256: createHash('sha256').update(patternBody(300, 2)).digest('hex'),
    });
    const queue = dumpNamespace(ns.path).queues[0];
    expect(queue.qnum).toBe(1);
    expect(queue.rtime).toBeGreaterThan(0);
    expect(queue.messages.map((m) => m.type)).toEqual(['1']);
    expect(() => receiveMessage(ns.path, id, 2)).toThrow(MsgqToolError);
    msgqTool(ns.path, 'rm', id);
    expect(dumpNamespace(ns.path).queues).toEqual([]);
  });

  it('sets owner, mode and qbytes, and raises msgmnb through the namespace sysctl', () => {
    const id = Number(msgqTool(ns.path, 'create', 99, '600').trim());
    expect(() => msgqTool(ns.path, 'set', id, 1000, 1001, '640', 65536)).toThrow(/Operation not permitted/);
    msgqTool(ns.path, 'sysctl', 'msgmnb', 65536);
    msgqTool(ns.path, 'set', id, 1000, 1001, '640', 65536);
    msgqTool(ns.path, 'sysctl', 'msgmnb', 16384);
    expect(msgqTool(ns.path, 'sysctl', 'msgmnb').trim()).toBe('16384');
    expect(dumpNamespace(ns.path).queues[0]).toMatchObject({ uid: 1000, gid: 1001, cuid: 0, mode: 0o640, qbytes: 65536 });
  });

  it('runs the container sample set: workload creates it, check accepts it once and then finds it gone', async () => {
    // workload sleeps forever: run it in the background inside the namespace and wait for READY.
    const workload = spawn('nsenter', [`--ipc=${ns.path}`, '--', buildMsgqTool(), 'workload'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise((resolve) => workload.once('exit', resolve));
    try {
      await new Promise<void>((resolve, reject) => {
        let output = '';
        workload.stdout.on('data', (chunk: Buffer) => {
          output += chunk.toString();
          if (output.includes('READY')) resolve();
        });
        workload.stderr.on('data', (chunk: Buffer) => reject(new Error(chunk.toString())));
      });
      const dump = dumpNamespace(ns.path);
      expect(dump.queues.length).toBe(7);
      expect(dump.queues.some((q) => q.qbytes > dump.limits.msgmnb)).toBe(true);
      expect(dump.queues.some((q) => q.cuid !== 0)).toBe(true);
      expect(msgqTool(ns.path, 'check')).toMatch(/^OK 7 queues/m);
      let failure: unknown;
      try {
        msgqTool(ns.path, 'check');
      } catch (error) {
        failure = error;
      }
      expect(failure).toBeInstanceOf(MsgqToolError);
      expect((failure as MsgqToolError).stdout).toMatch(/DIFF mixed types and sizes: qnum is 0, expected 10/);
    } finally {
      workload.kill('SIGKILL');
      await exited;
    }
  });
});
