// Where restore and verify read an image from. Restore reads it twice (validate everything, then
// apply), so a stream such as stdin is spooled to a private temporary file on the first read.
import { constants as fsConstants, createReadStream, promises as fs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { addAbortSignal, Readable } from 'node:stream';
import { IpcCkptError, throwIfAborted } from './errors';
import { loadNative } from './native';
import type { RollbackGuardian } from './rollback-guardian';

const READ_CHUNK_BYTES = 1 << 20;

export interface ImageSource {
  /** How messages name the image. */
  readonly label: string;
  /** A fresh read of the whole image from its first byte. */
  read(): AsyncIterable<Buffer>;
  /**
   * Every read returns the bytes of the first one as long as stillUnchanged() says so (a read lease held
   * since before the first read), so a later read need not be hashed again. False: hash every read.
   */
  readonly leased: boolean;
  /** leased, and nobody has opened the file for writing or truncated it since (such an opener waits for close()). */
  stillUnchanged(): boolean;
  /** Removes any spool file. */
  close(): Promise<void>;
}

export interface ImageSourceOptions {
  /** Told of the spool file before it is made: it removes it if we are killed. */
  guardian?: RollbackGuardian;
  /** Reading stops with the signal's reason between chunks (and while waiting for a stream). */
  signal?: AbortSignal;
  /** The image will be read more than once: take a read lease on a file where one proves it unchanged. */
  leaseForRereads?: boolean;
}

/**
 * File systems where every write to a file goes through its inode on this machine, so that a read lease
 * sees it. Not overlayfs (its upper and lower files can be written around the overlay), nor network or
 * FUSE file systems (their server can change a file): there a restore hashes its second read too.
 */
const LEASE_PROVES_UNCHANGED = new Set([
  0xef53, // ext2, ext3, ext4
  0x58465342, // xfs
  0x9123683e, // btrfs
  0x01021994, // tmpfs
  0xf2f52010, // f2fs
]);

function readError(label: string, error: unknown): IpcCkptError {
  const e = error as NodeJS.ErrnoException;
  return new IpcCkptError(e.code ?? 'E_INTERNAL', `reading the image ${label}: ${e.message}`, { errno: e.errno, syscall: e.syscall, cause: error });
}

async function* readFile(file: string | FileHandle, label: string, signal: AbortSignal | undefined): AsyncIterable<Buffer> {
  try {
    // An open handle is read from its first byte on each call (positioned reads) and stays open.
    const stream = typeof file === 'string' ? createReadStream(file, { highWaterMark: READ_CHUNK_BYTES }) : file.createReadStream({ start: 0, autoClose: false, highWaterMark: READ_CHUNK_BYTES });
    for await (const chunk of stream) {
      throwIfAborted(signal);
      yield chunk as Buffer;
    }
  } catch (error) {
    if (error instanceof IpcCkptError) throw error;
    throw readError(label, error);
  }
}

/** A regular file, opened once: every read is of the same inode, even if its path is replaced meanwhile. */
class FileImageSource implements ImageSource {
  constructor(
    private readonly handle: FileHandle,
    readonly label: string,
    readonly leased: boolean,
    private readonly signal: AbortSignal | undefined,
  ) {}

  static async open(filePath: string, options: ImageSourceOptions): Promise<FileImageSource> {
    let handle: FileHandle | undefined;
    try {
      // O_NONBLOCK: a FIFO given by mistake must fail below, not wait for a writer here.
      handle = await fs.open(filePath, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
      const stat = await handle.stat();
      if (!stat.isFile()) throw new IpcCkptError('E_USAGE', `${filePath} is not a regular file`);
      let leased = false;
      if (options.leaseForRereads) {
        const native = loadNative();
        leased = LEASE_PROVES_UNCHANGED.has(native.fileSystemMagic(handle.fd)) && native.takeReadLease(handle.fd);
      }
      return new FileImageSource(handle, filePath, leased, options.signal);
    } catch (error) {
      await handle?.close().catch(() => undefined);
      if (error instanceof IpcCkptError) throw error;
      throw readError(filePath, error);
    }
  }

  read(): AsyncIterable<Buffer> {
    return readFile(this.handle, this.label, this.signal);
  }

  stillUnchanged(): boolean {
    return this.leased && loadNative().readLeaseHeld(this.handle.fd);
  }

  /** Closing releases the lease: a writer waiting in open() goes on. */
  async close(): Promise<void> {
    await this.handle.close();
  }
}

class SpooledStreamSource implements ImageSource {
  readonly label = 'from the input stream';
  // The spool is written before it is read again: its second read is hashed like the first.
  readonly leased = false;
  private spoolPath: string | undefined;
  private spooled = false;

  constructor(
    private readonly stream: Readable | AsyncIterable<Buffer>,
    private readonly options: ImageSourceOptions,
  ) {}

  read(): AsyncIterable<Buffer> {
    if (this.spooled && this.spoolPath) return readFile(this.spoolPath, this.label, this.options.signal);
    if (this.spoolPath) throw new IpcCkptError('E_INTERNAL', 'the input stream can be read once while it is spooled');
    this.spoolPath = path.join(os.tmpdir(), `ipc-ckpt-spool-${process.pid}-${randomBytes(4).toString('hex')}.img`);
    return this.readAndSpool(this.spoolPath);
  }

  private async *readAndSpool(spoolPath: string): AsyncIterable<Buffer> {
    const { guardian, signal } = this.options;
    // Registered before it exists: a kill right after the open must not leave it.
    await guardian?.registerTemporaryFile(spoolPath);
    const spool = await fs.open(spoolPath, 'wx', 0o600);
    // A stream that stalls (stdin) must not hold an interrupted run.
    if (signal && this.stream instanceof Readable) addAbortSignal(signal, this.stream);
    try {
      for await (const chunk of this.stream) {
        throwIfAborted(signal);
        const buffer = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
        await spool.write(buffer);
        yield buffer;
      }
      this.spooled = true;
    } catch (error) {
      throwIfAborted(signal);
      throw error;
    } finally {
      await spool.close();
    }
  }

  stillUnchanged(): boolean {
    return false;
  }

  async close(): Promise<void> {
    if (!this.spoolPath) return;
    await fs.unlink(this.spoolPath).catch(() => undefined);
    await this.options.guardian?.forgetTemporaryFile(this.spoolPath);
  }
}

/** A file path, '-' for stdin, or a readable stream. */
export async function openImageSource(input: string | Readable | AsyncIterable<Buffer>, options: ImageSourceOptions = {}): Promise<ImageSource> {
  if (typeof input !== 'string' || input === '-') return new SpooledStreamSource(typeof input === 'string' ? process.stdin : input, options);
  return FileImageSource.open(input, options);
}
