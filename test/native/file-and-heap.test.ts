// The addon's calls that touch no namespace: read leases and fstatfs (lib/image-input.ts), and the
// command line's heap policy (lib/cli.ts).
import { spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { addonFile, loadNative } from '../../lib/native';
import { HEAP_MMAP_THRESHOLD_BYTES, HEAP_TRIM_THRESHOLD_BYTES, keepFreedHeap } from '../../lib/heap-policy';

const native = loadNative();
/** Under the sanitizer run libasan's allocator replaces glibc's, and its mallopt refuses every option. */
const ALLOCATOR_REPLACED = /libasan/.test(process.env.LD_PRELOAD ?? '');
let dir: string;
let file: string;

beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'ipc-ckpt-file-calls-'));
  file = path.join(dir, 'leased');
  writeFileSync(file, 'bytes');
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

test('fileSystemMagic is the f_type stat -f reports', () => {
  const fd = openSync(file, 'r');
  try {
    expect(native.fileSystemMagic(fd).toString(16)).toBe(execFileSync('stat', ['-f', '-c', '%t', file], { encoding: 'utf8' }).trim());
  } finally {
    closeSync(fd);
  }
});

test('a read lease is held until a writer opens the file, and that writer waits until it is released', async () => {
  const fd = openSync(file, 'r');
  let writerDone = false;
  try {
    expect(native.takeReadLease(fd)).toBe(true);
    expect(native.readLeaseHeld(fd)).toBe(true);
    const writer = spawn('sh', ['-c', 'exec 3>>"$1"', 'writer', file], { stdio: 'ignore' });
    writer.on('exit', () => (writerDone = true));
    const deadline = Date.now() + 10_000;
    while (native.readLeaseHeld(fd) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
    expect(native.readLeaseHeld(fd)).toBe(false);
    // The break signal is off: we are still here, and the writer still waits in open().
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(writerDone).toBe(false);
  } finally {
    closeSync(fd);
  }
  const deadline = Date.now() + 10_000;
  while (!writerDone && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
  expect(writerDone).toBe(true);
});

test('no lease while the file is open for writing; a bad fd is an EBADF error', () => {
  const writer = openSync(file, 'r+');
  const reader = openSync(file, 'r');
  try {
    expect(native.takeReadLease(reader)).toBe(false);
  } finally {
    closeSync(reader);
    closeSync(writer);
  }
  expect(() => native.takeReadLease(1 << 20)).toThrow(expect.objectContaining({ code: 'EBADF', syscall: 'fcntl' }));
  expect(() => native.readLeaseHeld(1 << 20)).toThrow(expect.objectContaining({ code: 'EBADF' }));
  expect(() => native.fileSystemMagic(1 << 20)).toThrow(expect.objectContaining({ code: 'EBADF', syscall: 'fstatfs' }));
});

/** Minor page faults of 100 allocations and frees of a 4 MiB Buffer in a fresh process, with or without the policy. */
function faultsOfBufferChurn(keep: boolean): number {
  const script = `
    const addon = require(process.env.ADDON_FILE);
    if (process.argv[1] === 'keep') addon.keepFreedHeap(${HEAP_MMAP_THRESHOLD_BYTES}, ${HEAP_TRIM_THRESHOLD_BYTES});
    const before = process.resourceUsage().minorPageFault;
    for (let i = 0; i < 100; i++) { let b = Buffer.alloc(4 << 20, 1); b = undefined; global.gc(); }
    process.stdout.write(String(process.resourceUsage().minorPageFault - before));`;
  const out = execFileSync(process.execPath, ['--expose-gc', '-e', script, keep ? 'keep' : 'default'], { encoding: 'utf8', env: { ...process.env, ADDON_FILE: addonFile() } });
  return Number(out);
}

test('the heap policy keeps freed buffers for reuse: a fraction of the page faults', () => {
  if (ALLOCATOR_REPLACED) {
    expect(native.keepFreedHeap(HEAP_MMAP_THRESHOLD_BYTES, HEAP_TRIM_THRESHOLD_BYTES)).toBe(false);
    return;
  }
  const without = faultsOfBufferChurn(false);
  const withPolicy = faultsOfBufferChurn(true);
  // 100 x 4 MiB is 102,400 pages: glibc's defaults fault in many of them again, the policy few.
  expect(without).toBeGreaterThan(5000);
  expect(withPolicy * 3).toBeLessThan(without);
  expect(() => keepFreedHeap()).not.toThrow();
});

test('keepFreedHeap takes thresholds in 1..2^30 bytes', () => {
  expect(native.keepFreedHeap(32 << 20, 64 << 20)).toBe(!ALLOCATOR_REPLACED);
  expect(() => native.keepFreedHeap(0, 64 << 20)).toThrow(/thresholds must be in/);
  expect(() => native.keepFreedHeap(32 << 20, 2 ** 31)).toThrow(/thresholds must be in/);
});
