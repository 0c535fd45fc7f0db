// save -o PATH where PATH exists and is not a regular file: written to as a stream, never replaced.
// /dev/null stays the device, /dev/stdout writes to our stdout, a FIFO's reader gets the image.
// -o DIR and -o '' fail before any work.
import { spawn, execFileSync } from 'node:child_process';
import { lstatSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { TestNamespace } from '../support/namespace';
import { msgqTool } from '../support/msgq-tool';
import { populateSample, SAMPLE_LIMITS } from '../support/sample-namespace';
import { runCli } from '../support/cli';
import { namespaceState } from './killed-run';

jest.setTimeout(2 * 60_000);

let dir: string;
let source: TestNamespace;

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'ipc-ckpt-special-'));
  source = await TestNamespace.create();
  populateSample(source.path);
});

afterAll(async () => {
  await source.destroy();
  rmSync(dir, { recursive: true, force: true });
});

function verifies(image: string): boolean {
  return runCli(['verify', '--ns', source.path, '-i', image]).status === 0;
}

test('save -o /dev/null as root: /dev/null is still the null device, the save succeeds', () => {
  const before = statSync('/dev/null');
  const result = runCli(['save', '--ns', source.path, '-o', '/dev/null']);
  expect(result.status).toBe(0);
  const after = statSync('/dev/null');
  expect(after.isCharacterDevice()).toBe(true);
  expect([after.rdev, after.ino, after.mode]).toEqual([before.rdev, before.ino, before.mode]);
  expect(readFileSync('/dev/null')).toHaveLength(0);
});

test('save -o /dev/stdout writes the image to stdout (a pipe) and replaces nothing', () => {
  const linkBefore = lstatSync('/dev/stdout');
  const result = runCli(['save', '--ns', source.path, '-o', '/dev/stdout']);
  expect(result.status).toBe(0);
  expect(lstatSync('/dev/stdout').isSymbolicLink()).toBe(linkBefore.isSymbolicLink());
  const image = path.join(dir, 'from-stdout.img');
  // runCli decodes stdout as UTF-8: take the bytes again through a shell redirect instead.
  execFileSync('sh', ['-c', `node "$0" save --ns "$1" -o /dev/stdout -q > "$2"`, path.resolve(__dirname, '../../bin/ipc-ckpt.js'), source.path, image]);
  expect(verifies(image)).toBe(true);
});

test('save -o /dev/stdout redirected to a file appends to what the shell opened, and the file verifies', () => {
  const image = path.join(dir, 'redirected.img');
  execFileSync('sh', ['-c', `node "$0" save --ns "$1" -o /dev/stdout -q > "$2"`, path.resolve(__dirname, '../../bin/ipc-ckpt.js'), source.path, image]);
  expect(verifies(image)).toBe(true);
  expect(readdirSync(dir).filter((name) => name.includes('.ipc-ckpt-'))).toEqual([]);
});

test('save -o FIFO (with a reader): the FIFO is still a FIFO and its reader got the whole image', async () => {
  const fifo = path.join(dir, 'fifo');
  execFileSync('mkfifo', [fifo]);
  const received = path.join(dir, 'from-fifo.img');
  const reader = spawn('sh', ['-c', 'cat "$0" > "$1"', fifo, received]);
  const readerDone = new Promise((resolve) => reader.on('exit', resolve));
  const result = runCli(['save', '--ns', source.path, '-o', fifo]);
  expect(result.status).toBe(0);
  expect(await readerDone).toBe(0);
  expect(lstatSync(fifo).isFIFO()).toBe(true);
  expect(verifies(received)).toBe(true);
});

test('save -o a symlink to a regular file replaces the file it points to, not the link', () => {
  const real = path.join(dir, 'real.img');
  writeFileSync(real, 'old');
  const link = path.join(dir, 'link.img');
  symlinkSync(real, link);
  expect(runCli(['save', '--ns', source.path, '-o', link]).status).toBe(0);
  expect(lstatSync(link).isSymbolicLink()).toBe(true);
  expect(verifies(real)).toBe(true);
});

test.each([
  ['a directory', () => dir, /-o .* is a directory/],
  ["''", () => '', /-o takes a file path/],
])('save -o %s fails with a usage error before any work: msgmax never raised, no file', (_name, output, message) => {
  const before = namespaceState(source);
  const result = runCli(['save', '--ns', source.path, '-o', output()]);
  expect(result.status).toBe(2);
  expect(result.stderr).toMatch(message);
  expect(namespaceState(source)).toEqual(before);
  expect(Number(msgqTool(source.path, 'sysctl', 'msgmax').trim())).toBe(SAMPLE_LIMITS.msgmax);
  expect(readdirSync(dir).filter((name) => name.includes('.ipc-ckpt-'))).toEqual([]);
});
