// The API's AbortSignal: save, restore and verify stop between batches with E_INTERRUPTED, having
// rolled back (the CLI wires SIGINT/SIGTERM/SIGHUP to it).
import { mkdtempSync, readdirSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { TestNamespace } from '../support/namespace';
import { dumpNamespace, msgqTool } from '../support/msgq-tool';
import { populateSample } from '../support/sample-namespace';
import { runCli } from '../support/cli';
import { IpcCkptError, restore, save, verify } from '../../lib';

jest.setTimeout(60_000);

let source: TestNamespace;
let dir: string;
let image: string;

beforeAll(async () => {
  source = await TestNamespace.create();
  populateSample(source.path);
  msgqTool(source.path, 'sysctl', 'msgmnb', 1 << 20);
  const long = msgqTool(source.path, 'create', '0x5a5a', '600').trim();
  msgqTool(source.path, 'send-many', long, 3000, 16, 9);
  dir = mkdtempSync(path.join(os.tmpdir(), 'ipc-ckpt-abort-'));
  image = path.join(dir, 'q.img');
  expect(runCli(['save', '--ns', source.path, '-o', image]).status).toBe(0);
});

afterAll(async () => {
  await source.destroy();
});

async function interrupted(run: Promise<unknown>): Promise<IpcCkptError> {
  const error = await run.then(() => undefined, (e: unknown) => e);
  expect(error).toBeInstanceOf(IpcCkptError);
  expect((error as IpcCkptError).code).toBe('E_INTERRUPTED');
  return error as IpcCkptError;
}

test('a restore aborted midway (after its first batch) rolls back: the target is as before', async () => {
  const target = await TestNamespace.create();
  try {
    const before = dumpNamespace(target.path);
    const controller = new AbortController();
    await interrupted(restore({ ns: target.path }, image, { signal: controller.signal, onProgress: () => controller.abort() }));
    expect(dumpNamespace(target.path)).toEqual(before);
  } finally {
    await target.destroy();
  }
});

test('a save aborted midway leaves no file and the source (and its msgmax) as before', async () => {
  const before = dumpNamespace(source.path);
  const controller = new AbortController();
  await interrupted(save({ ns: source.path }, path.join(dir, 'aborted.img'), { signal: controller.signal, onProgress: () => controller.abort() }));
  expect(dumpNamespace(source.path)).toEqual(before);
  expect(readdirSync(dir).filter((name) => name !== 'q.img')).toEqual([]);
});

test('an already aborted signal: verify ends before it reads anything', async () => {
  await interrupted(verify({ ns: source.path }, image, { signal: AbortSignal.abort() }));
});
