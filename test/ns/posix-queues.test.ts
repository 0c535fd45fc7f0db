// POSIX message queues through the CLI, in real namespaces and real mqueue filesystems: saved with
// --freeze, restored into a fresh namespace, received there by an application (test/fixtures/mq-tool.c)
// in exactly the original order with the same bytes; what cannot be put back unchanged is refused.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import Ajv2020 from 'ajv/dist/2020';
import * as os from 'node:os';
import * as path from 'node:path';
import { TestNamespace } from '../support/namespace';
import { runCli } from '../support/cli';
import { FreezerCgroup } from '../support/hammer';
import { mqTool, patternHex, queueAttr, receiveAll, ReceivedPosixMessage, startMqTool } from '../support/mq-tool';

jest.setTimeout(120_000);

const LIMITS = { queues_max: 300, msg_max: 64, msgsize_max: 16384, msg_default: 7, msgsize_default: 1000 };
const MQ_PRIO_MAX = 32768;

interface Sent extends ReceivedPosixMessage {
  order: number;
}

interface QueueSpec {
  name: string;
  maxmsg: number;
  msgsize: number;
  mode: number;
  owner?: [number, number];
  messages: Array<{ priority: number; size: number }>;
}

/** 63 messages for a queue of 64: priorities 0 and MQ_PRIO_MAX-1 among mixed and repeated ones, sizes 0..64. */
function almostFullMessages(): Array<{ priority: number; size: number }> {
  const priorities = [0, MQ_PRIO_MAX - 1, 5, 5, 1, MQ_PRIO_MAX - 1, 0, 17000];
  return Array.from({ length: 63 }, (_, i) => ({ priority: priorities[(i * 5) % priorities.length], size: i % 65 }));
}

const SPECS: QueueSpec[] = [
  { name: 'empty', maxmsg: 4, msgsize: 16, mode: 0o600, messages: [] },
  { name: 'one', maxmsg: 3, msgsize: 32, mode: 0o640, messages: [{ priority: 5, size: 32 }] },
  { name: 'almost-full', maxmsg: 64, msgsize: 64, mode: 0o000, messages: almostFullMessages() },
  { name: 'big', maxmsg: 4, msgsize: LIMITS.msgsize_max, mode: 0o640, owner: [1234, 5678], messages: [{ priority: 1, size: 0 }, { priority: 1, size: LIMITS.msgsize_max }, { priority: 2, size: 1 }] },
];

function setLimits(nsPath: string, limits: Record<string, number>): void {
  for (const [name, value] of Object.entries(limits)) execFileSync('nsenter', [`--ipc=${nsPath}`, 'sh', '-c', `echo ${value} > /proc/sys/fs/mqueue/${name}`]);
}

function readLimits(nsPath: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const name of Object.keys(LIMITS)) out[name] = Number(execFileSync('nsenter', [`--ipc=${nsPath}`, 'cat', `/proc/sys/fs/mqueue/${name}`], { encoding: 'utf8' }).trim());
  return out;
}

/** Mode and owner of every queue, through a mount of the namespace's mqueue filesystem in a private mount namespace. */
function queueInodes(nsPath: string): string {
  return execFileSync('nsenter', [`--ipc=${nsPath}`, 'unshare', '--mount', 'sh', '-c', 'mount -t mqueue none /mnt && cd /mnt && for q in *; do [ -e "$q" ] && stat -c "%n %a %u %g" "$q"; done; true'], { encoding: 'utf8' });
}

/** Creates the queues and sends their messages; returns each queue's messages in delivery order. */
function populate(nsPath: string): Map<string, Sent[]> {
  const expected = new Map<string, Sent[]>();
  let seed = 0;
  for (const spec of SPECS) {
    mqTool(nsPath, 'create', spec.name, spec.maxmsg, spec.msgsize, spec.mode.toString(8));
    if (spec.owner) mqTool(nsPath, 'chown', spec.name, spec.owner[0], spec.owner[1]);
    const sent: Sent[] = spec.messages.map((m, order) => {
      seed++;
      mqTool(nsPath, 'send', spec.name, m.priority, m.size, seed);
      return { priority: m.priority, size: m.size, hex: patternHex(m.size, seed), order };
    });
    // Delivery order: highest priority first, first in first out within a priority.
    expected.set(spec.name, [...sent].sort((a, b) => b.priority - a.priority || a.order - b.order));
  }
  return expected;
}

const strip = (messages: Sent[]): ReceivedPosixMessage[] => messages.map(({ priority, size, hex }) => ({ priority, size, hex }));

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'ipc-ckpt-posix-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test('save --freeze and restore carry every POSIX queue exactly: attributes, owner, mode, limits, messages in delivery order', async () => {
  const source = await TestNamespace.create();
  const target = await TestNamespace.create();
  const cgroup = FreezerCgroup.create(`ipc-ckpt-posix-${process.pid}`);
  try {
    setLimits(source.path, LIMITS);
    const expected = populate(source.path);
    writeFileSync(path.join(cgroup.directory, 'cgroup.procs'), String(source.pid));
    const image = path.join(dir, 'posix.img');
    const saved = runCli(['save', '--freeze', '-t', String(source.pid), '-o', image]);
    expect(saved.stderr).toMatch(/4 POSIX queue\(s\) with 67 message\(s\)/);
    expect(saved.status).toBe(0);
    expect(cgroup.state).toBe('THAWED');

    const inspected = JSON.parse(runCli(['inspect', '--json', image]).stdout) as { format: { extensions: string[] }; posix: { limits: Record<string, number>; queues: Array<{ name: string; curmsgs: number }> } };
    expect(inspected.format.extensions).toContain('posix-mqueue');
    expect(inspected.posix.limits).toEqual({ queuesMax: 300, msgMax: 64, msgsizeMax: 16384, msgDefault: 7, msgsizeDefault: 1000 });
    expect(inspected.posix.queues.map((q) => [q.name, q.curmsgs])).toEqual([['almost-full', 63], ['big', 3], ['empty', 0], ['one', 1]]);

    const restored = runCli(['restore', '--ns', target.path, '-i', image]);
    expect(restored.status).toBe(0);
    expect(runCli(['verify', '--ns', target.path, '-i', image, '--quiescent']).stdout).toMatch(/^equal: 4 queue\(s\), 67 message\(s\)/);
    expect(readLimits(target.path)).toEqual(LIMITS);
    expect(queueInodes(target.path)).toBe(queueInodes(source.path));
    expect(queueInodes(target.path)).toBe('almost-full 0 0 0\nbig 640 1234 5678\nempty 600 0 0\none 640 0 0\n');
    for (const spec of SPECS) {
      expect(queueAttr(target.path, spec.name)).toEqual({ maxmsg: spec.maxmsg, msgsize: spec.msgsize, curmsgs: spec.messages.length });
      // The application receives the restored messages in the original order; the source still holds exactly its own.
      expect(receiveAll(target.path, spec.name)).toEqual(strip(expected.get(spec.name)!));
      expect(receiveAll(source.path, spec.name)).toEqual(strip(expected.get(spec.name)!));
    }
  } finally {
    await source.destroy();
    await target.destroy();
    await cgroup.remove();
  }
});

test('a full queue and a queue with an mq_notify registration are refused before anything is taken; the source is untouched', async () => {
  const source = await TestNamespace.create();
  try {
    mqTool(source.path, 'create', 'a-first', 4, 16, '600');
    mqTool(source.path, 'send', 'a-first', 3, 16, 1);
    mqTool(source.path, 'create', 'full', 2, 16, '600');
    mqTool(source.path, 'send', 'full', 1, 8, 2);
    mqTool(source.path, 'send', 'full', 2, 8, 3);
    const sender = await startMqTool(source.path, 'send-block', 'full', 9, 4, 4);
    expect(sender.firstLine).toBe('BLOCKING');
    mqTool(source.path, 'create', 'notified', 4, 16, '600');
    mqTool(source.path, 'send', 'notified', 0, 5, 5);
    const notifier = await startMqTool(source.path, 'notify', 'notified');
    try {
      const image = path.join(dir, 'refused.img');
      const result = runCli(['save', '--ns', source.path, '--quiescent', '-o', image]);
      expect(result.status).toBe(1);
      expect(result.stderr).toMatch(/POSIX queue '\/full' is full \(2 of 2 messages\): taking one would let a blocked sender's message in/);
      expect(result.stderr).toMatch(/POSIX queue '\/notified' has an mq_notify registration \(pid \d+\)/);
      expect(result.stderr).toMatch(/nothing was taken/);
      // The blocked sender is still blocked: no receive made room for it.
      expect(sender.child.exitCode).toBeNull();
      expect(queueAttr(source.path, 'full').curmsgs).toBe(2);
      expect(queueAttr(source.path, 'notified').curmsgs).toBe(1);
      expect(queueAttr(source.path, 'a-first').curmsgs).toBe(1);
    } finally {
      await sender.stop();
      await notifier.stop();
    }
    expect(receiveAll(source.path, 'full')).toEqual([{ priority: 2, size: 8, hex: patternHex(8, 3) }, { priority: 1, size: 8, hex: patternHex(8, 2) }]);
    expect(receiveAll(source.path, 'notified')).toEqual([{ priority: 0, size: 5, hex: patternHex(5, 5) }]);
  } finally {
    await source.destroy();
  }
});

test('a save of POSIX queues with messages needs --freeze or --quiescent; empty queues need neither; --strict-v16 and --sysv-only', async () => {
  const source = await TestNamespace.create();
  try {
    mqTool(source.path, 'create', 'idle', 2, 8, '600');
    const emptyOnly = path.join(dir, 'empty.img');
    expect(runCli(['save', '--ns', source.path, '-o', emptyOnly]).status).toBe(0);
    mqTool(source.path, 'send', 'idle', 1, 8, 1);
    const refused = runCli(['save', '--ns', source.path, '-o', path.join(dir, 'x.img')]);
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(/--freeze.*--quiescent/s);
    const strict = runCli(['save', '--ns', source.path, '--strict-v16', '--quiescent', '-o', path.join(dir, 'x.img')]);
    expect(strict.status).toBe(1);
    expect(strict.stderr).toMatch(/which v16 has no record for: save with --sysv-only/);
    const sysvOnly = path.join(dir, 'sysv.img');
    expect(runCli(['save', '--ns', source.path, '--sysv-only', '-o', sysvOnly]).status).toBe(0);
    expect(JSON.parse(runCli(['inspect', '--json', sysvOnly]).stdout).posix).toBeUndefined();
    expect(runCli(['inspect', '--json', emptyOnly]).stdout).toMatch(/"name": "idle"/);
    expect(queueAttr(source.path, 'idle').curmsgs).toBe(1);
  } finally {
    await source.destroy();
  }
});

test('restore finds a POSIX queue name already present before any change, and rolls back a failed restore', async () => {
  const source = await TestNamespace.create();
  const target = await TestNamespace.create();
  try {
    mqTool(source.path, 'create', 'a', 2, 8, '600');
    mqTool(source.path, 'create', 'b', 2, 8, '600');
    mqTool(source.path, 'send', 'b', 1, 8, 1);
    const image = path.join(dir, 'conflict.img');
    expect(runCli(['save', '--ns', source.path, '--quiescent', '-o', image]).status).toBe(0);
    mqTool(target.path, 'create', 'b', 5, 5, '600');
    const conflict = runCli(['restore', '--ns', target.path, '-i', image]);
    expect(conflict.status).toBe(1);
    expect(conflict.stderr).toMatch(/POSIX queue '\/b' already exists/);
    expect(queueInodes(target.path)).toBe('b 600 0 0\n');
    // A target whose msgsize_max cannot be raised that far: the restore fails midway and removes what it made.
    mqTool(target.path, 'unlink', 'b');
    const failed = runCli(['restore', '--ns', target.path, '-i', image], { env: { IPC_CKPT_TEST_FAULT: 'after-posix-queue:1' } });
    expect(failed.status).toBe(1);
    expect(queueInodes(target.path)).toBe('');
  } finally {
    await source.destroy();
    await target.destroy();
  }
});

test('--json documents with POSIX queues match the documented schema (save, restore --dry-run, inspect --messages)', async () => {
  const schema = JSON.parse(readFileSync(path.resolve(__dirname, '../../docs/schema/ipc-ckpt.schema.json'), 'utf8')) as { $id: string };
  const ajv = new Ajv2020({ allErrors: true });
  ajv.addSchema(schema);
  const valid = (kind: string, text: string) => {
    const validate = ajv.getSchema(`${schema.$id}#/$defs/${kind}`)!;
    const document = JSON.parse(text) as Record<string, unknown>;
    if (!validate(document)) throw new Error(`${kind}: ${ajv.errorsText(validate.errors)}`);
    return document;
  };
  const source = await TestNamespace.create();
  const target = await TestNamespace.create();
  try {
    setLimits(source.path, { msg_max: 20 });
    mqTool(source.path, 'create', 'j', 20, 16, '640');
    mqTool(source.path, 'send', 'j', 4, 16, 1);
    const image = path.join(dir, 'json.img');
    expect(valid('save', runCli(['save', '--ns', source.path, '--quiescent', '-o', image, '--json']).stdout)).toMatchObject({ posixQueues: 1, posixMessages: 1 });
    const plan = valid('restore', runCli(['restore', '--ns', target.path, '-i', image, '--dry-run', '--json']).stdout) as { plan: { posix: { during: unknown[]; queues: unknown[] } } };
    expect(plan.plan.posix.during).toEqual([{ name: 'msg_max', from: 10, to: 20 }]);
    const report = valid('inspect', runCli(['inspect', '--json', '--messages', image]).stdout) as { posix: { queues: Array<{ messages: Array<{ priority: number; body: string }> }> } };
    expect(report.posix.queues[0].messages.map((m) => [m.priority, Buffer.from(m.body, 'base64').toString('hex')])).toEqual([[4, patternHex(16, 1)]]);
  } finally {
    await source.destroy();
    await target.destroy();
  }
});
