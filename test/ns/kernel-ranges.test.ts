// Every id the kernel can hand out round-trips (seq 65535 comes only through msg_next_id), and an
// image with a field outside the kernel's range is refused, naming its offset, before any change.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { TestNamespace } from '../support/namespace';
import { dumpNamespace, msgqTool } from '../support/msgq-tool';
import { runCli } from '../support/cli';
import { decodeImage } from '../../lib/image/decoder';
import { IpcMsgLayout, IpcPermsLayout } from '../../lib/image/layout';
import { resealed } from '../unit/image/support';

jest.setTimeout(60_000);

const RESTORABLE = ['id', 'key', 'uid', 'gid', 'cuid', 'cgid', 'mode', 'qbytes', 'qnum', 'cbytes', 'messages'] as const;

let source: TestNamespace;
let target: TestNamespace;
let dir: string;

beforeEach(async () => {
  [source, target] = await Promise.all([TestNamespace.create(), TestNamespace.create()]);
  dir = mkdtempSync(path.join(os.tmpdir(), 'ipc-ckpt-ranges-'));
});

afterEach(async () => {
  await Promise.all([source.destroy(), target.destroy()]);
});

function restorable(nsPath: string): unknown {
  return dumpNamespace(nsPath).queues.map((q) => RESTORABLE.map((field) => q[field]));
}

test('queues at seq 65535 (ids 2147450889 and 2147483647, the largest) save and restore exactly', () => {
  for (const [key, id] of [['0x65535', 65535 * 32768 + 9], ['0x7fff', 2147483647]] as const) {
    expect(Number(msgqTool(source.path, 'create', key, '640', '--id', id).trim())).toBe(id);
    msgqTool(source.path, 'send', id, 7, 33, 1);
  }
  const image = path.join(dir, 'seq.img');
  const saved = runCli(['save', '--ns', source.path, '-o', image]);
  expect(saved.stderr).toMatch(/saved 2 queue/);
  expect(saved.status).toBe(0);
  expect(runCli(['restore', '--ns', target.path, '-i', image]).status).toBe(0);
  expect(restorable(target.path)).toEqual(restorable(source.path));
  expect(runCli(['verify', '--ns', target.path, '-i', image]).status).toBe(0);
});

/** The offset of the image's first queue record. */
async function firstQueueOffset(image: Buffer): Promise<number> {
  for await (const event of decodeImage([image])) if (event.kind === 'queue') return event.offset;
  throw new Error('no queue in the image');
}

test.each([
  ['uid', IpcMsgLayout.PERMS + IpcPermsLayout.UID],
  ['gid', IpcMsgLayout.PERMS + IpcPermsLayout.GID],
  ['cuid', IpcMsgLayout.PERMS + IpcPermsLayout.CUID],
  ['cgid', IpcMsgLayout.PERMS + IpcPermsLayout.CGID],
])('an image whose %s is 0xffffffff ("unchanged" to the kernel) is refused with its offset by restore and restore --dry-run; the target is untouched', async (field, fieldOffset) => {
  msgqTool(source.path, 'create', '0x77', '600');
  const image = path.join(dir, 'good.img');
  expect(runCli(['save', '--ns', source.path, '-o', image]).status).toBe(0);
  const good = readFileSync(image);
  const queueAt = await firstQueueOffset(good);
  const crafted = path.join(dir, 'crafted.img');
  writeFileSync(crafted, resealed(good, (body) => body.writeUInt32LE(0xffffffff, queueAt + fieldOffset)));
  const before = dumpNamespace(target.path);
  for (const dryRun of [['--dry-run'], []]) {
    const result = runCli(['restore', ...dryRun, '--ns', target.path, '-i', crafted]);
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(new RegExp(`record at offset ${queueAt}: IPC_MSG id \\d+: ${field} 4294967295 is \\(uid_t\\)-1`));
    expect(dumpNamespace(target.path)).toEqual(before);
  }
});
