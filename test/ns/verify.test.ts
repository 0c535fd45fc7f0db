// verify compares and changes nothing: --ignore-other-queues checks only the image's queues, and a
// message above msgmax is read by raising msgmax for the comparison and putting it back.
import { mkdtempSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { TestNamespace } from '../support/namespace';
import { dumpNamespace, msgqTool } from '../support/msgq-tool';
import { populateSample, SAMPLE_LIMITS } from '../support/sample-namespace';
import { runCli } from '../support/cli';

jest.setTimeout(60_000);

let source: TestNamespace;
let target: TestNamespace;
let image: string;

beforeAll(async () => {
  [source, target] = await Promise.all([TestNamespace.create(), TestNamespace.create()]);
  populateSample(source.path);
  image = path.join(mkdtempSync(path.join(os.tmpdir(), 'ipc-ckpt-verify-')), 'q.img');
  expect(runCli(['save', '--ns', source.path, '-o', image]).status).toBe(0);
  expect(runCli(['restore', '--ns', target.path, '-i', image]).status).toBe(0);
});

afterAll(async () => {
  await Promise.all([source.destroy(), target.destroy()]);
});

test('verify --ignore-other-queues compares the image\'s queues only; without it the other queues are differences', () => {
  const other = msgqTool(target.path, 'create', '0x4242', '600', '--id', 900).trim();
  try {
    const plain = runCli(['verify', '--ns', target.path, '-i', image]);
    expect(plain.status).toBe(1);
    expect(plain.stdout).toMatch(/queue 900 \(key 0x4242\) is in .* but not in the image/);
    const only = runCli(['verify', '--ignore-other-queues', '--ns', target.path, '-i', image]);
    expect(only.stdout).toMatch(/^equal: 5 queue\(s\)/);
    expect(only.status).toBe(0);
    // A difference in one of the image's queues is still found: a message in its empty queue (key 0x1004).
    const empty = dumpNamespace(target.path).queues.find((q) => q.key === 0x1004)!.id;
    msgqTool(target.path, 'send', empty, 1, 3);
    const changed = runCli(['verify', '--ignore-other-queues', '--ns', target.path, '-i', image]);
    expect(changed.stdout).toMatch(new RegExp(`queue ${empty}: qnum is 1, the image has 0`));
    msgqTool(target.path, 'recv', empty, 0, '--nowait');
  } finally {
    msgqTool(target.path, 'rm', other);
  }
});

test('verify of a namespace holding a message above msgmax changes nothing: msgmax and every queue as before', () => {
  const before = dumpNamespace(source.path);
  const result = runCli(['verify', '--ns', source.path, '-i', image]);
  expect(result.status).toBe(0);
  expect(dumpNamespace(source.path)).toEqual(before);
  expect(Number(msgqTool(source.path, 'sysctl', 'msgmax').trim())).toBe(SAMPLE_LIMITS.msgmax);
});
