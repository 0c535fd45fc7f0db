import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { TestNamespace } from '../support/namespace';
import { runCli } from '../support/cli';
import { check, inspect, restore, save, verify, IpcCkptError } from '../../lib';

jest.setTimeout(30_000);

let ns: TestNamespace;
beforeEach(async () => {
  ns = await TestNamespace.create();
});
afterEach(async () => {
  await ns.destroy();
});

test('check prints one finding a line and exits 0 on this machine', () => {
  const result = runCli(['check', '--ns', ns.path]);
  expect(result.status).toBe(0);
  const lines = result.stdout.trim().split('\n');
  expect(lines).toEqual(expect.arrayContaining([
    expect.stringMatching(/^ok +setns: /),
    expect.stringMatching(/^ok +MSG_COPY: /),
    expect.stringMatching(/^ok +msg_next_id: /),
    expect.stringMatching(/^ok +CAP_SYS_ADMIN: /),
    expect.stringMatching(/^(ok|note) +CAP_SYS_RESOURCE: /),
    'save: can work; restore: can work',
  ]));
});

test('check --json and the API agree', async () => {
  const result = await check({ pid: ns.pid });
  expect(result).toMatchObject({ canSave: true, canRestore: true });
  expect(JSON.parse(runCli(['check', '--json', '-t', String(ns.pid)]).stdout)).toEqual(JSON.parse(JSON.stringify(result)));
});

test('check reports a missing capability and exits 1', () => {
  // Without CAP_SYS_ADMIN setns into another namespace is refused.
  const result = spawnSync('setpriv', ['--inh-caps=-all', '--bounding-set=-sys_admin', process.execPath, path.resolve(__dirname, '../../bin/ipc-ckpt.js'), 'check', '--ns', ns.path], { encoding: 'utf8' });
  expect(result.status).toBe(1);
  expect(`${result.stdout}${result.stderr}`).toMatch(/fail +setns: cannot join .*Operation not permitted/);
});

describe('bad targets are a clear error, for every command and the API', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ipc-ckpt-targets-'));
  const plainFile = path.join(dir, 'plain');
  writeFileSync(plainFile, 'not a namespace');
  const image = path.join(dir, 'empty.img');

  beforeAll(async () => {
    const holder = await TestNamespace.create();
    await save({ ns: holder.path }, image);
    await holder.destroy();
  });

  const targets: Array<[string, string[], object, RegExp]> = [
    ['a regular file', ['--ns', plainFile], { ns: plainFile }, /not a namespace file/],
    ['a net namespace', ['--ns', '/proc/self/ns/net'], { ns: '/proc/self/ns/net' }, /net namespace, not an IPC namespace/],
    ['a pid that does not exist', ['-t', '999999999'], { pid: 999999999 }, /no process with pid 999999999/],
  ];

  test.each(targets)('%s', async (_name, flags, target, message) => {
    for (const command of [['save', '-o', path.join(dir, 'x.img')], ['restore', '-i', image], ['verify', '-i', image], ['check']]) {
      const result = runCli([command[0], ...flags, ...command.slice(1)]);
      expect([command[0], result.status]).toEqual([command[0], 1]);
      expect(result.stderr).toMatch(message);
    }
    for (const call of [() => save(target, path.join(dir, 'y.img')), () => restore(target, image), () => verify(target, image), () => check(target)]) {
      const error = await call().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(IpcCkptError);
      expect((error as IpcCkptError).message).toMatch(message);
      expect((error as IpcCkptError).code).toMatch(/^E_TARGET$|^ENOENT$/);
    }
  });

  test('a damaged image is refused with its offset before the target is opened', async () => {
    const { readFileSync } = await import('node:fs');
    const bytes = readFileSync(image);
    bytes[bytes.length - 20] ^= 0xff;
    const damaged = path.join(dir, 'damaged.img');
    writeFileSync(damaged, bytes);
    await expect(inspect(readFileSync(damaged) as unknown as AsyncIterable<Buffer>)).rejects.toMatchObject({ code: 'E_IMAGE_CORRUPT' });
    const result = runCli(['restore', '--ns', ns.path, '-i', damaged]);
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/offset \d+/);
  });
});
