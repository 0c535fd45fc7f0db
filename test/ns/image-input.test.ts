// lib/image-input.ts: a restore reads an image over 32 MiB twice. Its second read is hashed again
// unless a read lease, held since before the first read, proves the file unchanged; either way a
// change between the reads makes the restore roll back.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import * as os from 'node:os';
import * as path from 'node:path';
import { TestNamespace } from '../support/namespace';
import { dumpNamespace } from '../support/msgq-tool';
import { encodeImage } from '../../lib/image/encoder';
import { hostHeader } from '../../lib/save';
import type { NamespaceLimits, QueueRecord } from '../../lib/image/model';
import { openImageSource } from '../../lib/image-input';
import { restore, verify, IpcCkptError } from '../../lib';

jest.setTimeout(60_000);

const MESSAGE_BYTES = 64 * 1024;
/** 39 MiB of messages: more than a restore keeps from its first read (32 MiB), so it reads the file again. */
const MESSAGES = 624;
const QUEUE_BYTES = MESSAGES * MESSAGE_BYTES;
const LIMITS: NamespaceLimits = {
  shmCtlmax: 0n, shmCtlall: 0n, shmCtlmni: 0, msgCtlmax: MESSAGE_BYTES, msgCtlmnb: QUEUE_BYTES, msgCtlmni: 32000, semCtlMsl: 0, semCtlMns: 0, semCtlOpm: 0, semCtlMni: 0,
};

let dir: string;
let image: string;
let target: TestNamespace;

beforeAll(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'ipc-ckpt-image-input-'));
  image = path.join(dir, 'big.img');
  const queue: QueueRecord = {
    id: 5, key: 0x5151, uid: 0, gid: 0, cuid: 0, cgid: 0, mode: 0o600, seq: 0, stime: 0n, rtime: 0n, ctime: 0n,
    cbytes: BigInt(QUEUE_BYTES), qnum: BigInt(MESSAGES), qbytes: BigInt(QUEUE_BYTES), lspid: 0, lrpid: 0,
  };
  const messages = Array.from({ length: MESSAGES }, (_, i) => ({ type: BigInt(i + 1), body: Buffer.alloc(MESSAGE_BYTES, i % 251) }));
  writeFileSync(image, encodeImage({ header: hostHeader(0n), limits: LIMITS, queues: [{ queue, messages }] }));
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

beforeEach(async () => {
  target = await TestNamespace.create();
});

afterEach(async () => {
  await target.destroy();
});

/** Whether /proc/locks shows a lease on the file being broken (a writer waits in open()). */
function leaseBreaking(file: string): boolean {
  const inode = statSync(file).ino;
  return readFileSync('/proc/locks', 'utf8')
    .split('\n')
    .some((line) => /LEASE\s+BREAKING/.test(line) && line.includes(`:${inode} `));
}

function waitUntil(what: string, condition: () => boolean, timeoutMs = 10_000): void {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5);
  }
}

/** The child's exit code, also when it exited before this was called (its 'exit' event is then past). */
function exited(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => child.on('exit', (code) => resolve(code)));
}

describe('openImageSource', () => {
  test('a regular file on this machine is leased when it will be read again, and only then', async () => {
    const leased = await openImageSource(image, { leaseForRereads: true });
    const once = await openImageSource(image);
    try {
      expect(leased.leased).toBe(true);
      expect(leased.stillUnchanged()).toBe(true);
      expect(once.leased).toBe(false);
      expect(once.stillUnchanged()).toBe(false);
    } finally {
      await Promise.all([leased.close(), once.close()]);
    }
  });

  test('a file open for writing elsewhere is not leased (its reads are hashed instead)', async () => {
    const writer = openSync(image, 'r+');
    try {
      const source = await openImageSource(image, { leaseForRereads: true });
      expect(source.leased).toBe(false);
      await source.close();
    } finally {
      closeSync(writer);
    }
  });

  test('a file on overlayfs is not leased: its layers can be written around the overlay', async () => {
    const layers = path.join(dir, 'overlay');
    for (const d of ['lower', 'upper', 'work', 'merged']) mkdirSync(path.join(layers, d), { recursive: true });
    writeFileSync(path.join(layers, 'lower', 'q.img'), 'bytes');
    execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${layers}/lower,upperdir=${layers}/upper,workdir=${layers}/work`, `${layers}/merged`]);
    try {
      const source = await openImageSource(path.join(layers, 'merged', 'q.img'), { leaseForRereads: true });
      expect(source.leased).toBe(false);
      await source.close();
    } finally {
      execFileSync('umount', [`${layers}/merged`]);
    }
  });

  test('a FIFO is refused at once, not waited on', async () => {
    const fifo = path.join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    const error = await openImageSource(fifo, { leaseForRereads: true }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(IpcCkptError);
    expect((error as IpcCkptError).code).toBe('E_USAGE');
    expect((error as IpcCkptError).message).toMatch(/is not a regular file/);
  });
});

describe('restore of an image it reads twice', () => {
  test('restores it exactly, and verify agrees', async () => {
    const summary = await restore({ ns: target.path }, image);
    expect(summary.messages).toBe(MESSAGES);
    const [queue] = dumpNamespace(target.path).queues;
    expect(queue).toMatchObject({ id: 5, key: 0x5151, qnum: MESSAGES, cbytes: QUEUE_BYTES, qbytes: QUEUE_BYTES });
    expect(queue.messages.map((m) => m.type)).toEqual(Array.from({ length: MESSAGES }, (_, i) => String(i + 1)));
    const result = await verify({ ns: target.path }, image);
    expect(result.equal).toBe(true);
  });

  test('a process opening the leased file for writing waits, and the restore rolls back', async () => {
    const before = dumpNamespace(target.path);
    let writer: ChildProcess | undefined;
    const error = await restore({ ns: target.path }, image, {
      // Between the reads: the writer's open() breaks the lease and waits until the restore closes the file.
      onProgress: () => {
        if (writer) return;
        writer = spawn('sh', ['-c', 'exec 3>>"$1"', 'writer', image], { stdio: 'ignore' });
        waitUntil('the writer breaks the lease', () => leaseBreaking(image));
      },
    }).catch((e: unknown) => e);
    expect(writer).toBeDefined();
    expect(error).toBeInstanceOf(IpcCkptError);
    expect((error as IpcCkptError).code).toBe('E_IMAGE_CORRUPT');
    expect((error as IpcCkptError).message).toMatch(/was opened for writing during the restore/);
    expect(await exited(writer!)).toBe(0);
    expect(dumpNamespace(target.path)).toEqual(before);
  });

  test('without a lease, a byte changed between the reads fails the second hash, and the restore rolls back', async () => {
    const copy = path.join(dir, 'changed.img');
    writeFileSync(copy, readFileSync(image));
    const before = dumpNamespace(target.path);
    // Held open for writing: no lease can be taken.
    const writer = openSync(copy, 'r+');
    try {
      let changed = false;
      const error = await restore({ ns: target.path }, copy, {
        onProgress: () => {
          if (changed) return;
          changed = true;
          // A byte of a message body in the middle of the image.
          writeSync(writer, Buffer.from([0xff]), 0, 1, Math.floor(QUEUE_BYTES / 2));
        },
      }).catch((e: unknown) => e);
      expect(changed).toBe(true);
      expect(error).toBeInstanceOf(IpcCkptError);
      expect((error as IpcCkptError).code).toBe('E_IMAGE_CORRUPT');
      expect((error as IpcCkptError).message).toMatch(/changed between validation and restore/);
      expect(dumpNamespace(target.path)).toEqual(before);
    } finally {
      closeSync(writer);
    }
  });
});
