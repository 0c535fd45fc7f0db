// Where restore and verify read an image from. Restore reads it twice (validate everything, then
// apply), so a stream such as stdin is spooled to a private temporary file on the first read.
import { createReadStream, promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { addAbortSignal, Readable } from 'node:stream';
import { IpcCkptError, throwIfAborted } from './errors';
import type { RollbackGuardian } from './rollback-guardian';

const READ_CHUNK_BYTES = 1 << 20;

export interface ImageSource {
  /** How messages name the image. */
  readonly label: string;
  /** A fresh read of the whole image from its first byte. */
  read(): AsyncIterable<Buffer>;
  /** Removes any spool file. */
  close(): Promise<void>;
}

export interface ImageSourceOptions {
  /** Told of the spool file before it is made: it removes it if we are killed. */
  guardian?: RollbackGuardian;
  /** Reading stops with the signal's reason between chunks (and while waiting for a stream). */
  signal?: AbortSignal;
}

function readError(label: string, error: unknown): IpcCkptError {
  const e = error as NodeJS.ErrnoException;
  return new IpcCkptError(e.code ?? 'E_INTERNAL', `reading the image ${label}: ${e.message}`, { errno: e.errno, syscall: e.syscall, cause: error });
}

async function* readFile(filePath: string, label: string, signal: AbortSignal | undefined): AsyncIterable<Buffer> {
  try {
    for await (const chunk of createReadStream(filePath, { highWaterMark: READ_CHUNK_BYTES })) {
      throwIfAborted(signal);
      yield chunk as Buffer;
    }
  } catch (error) {
    if (error instanceof IpcCkptError) throw error;
    throw readError(label, error);
  }
}

class FileImageSource implements ImageSource {
  constructor(
    private readonly filePath: string,
    private readonly signal: AbortSignal | undefined,
  ) {}

  get label(): string {
    return this.filePath;
  }

  read(): AsyncIterable<Buffer> {
    return readFile(this.filePath, this.label, this.signal);
  }

  async close(): Promise<void> {}
}

class SpooledStreamSource implements ImageSource {
  readonly label = 'from the input stream';
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

  async close(): Promise<void> {
    if (!this.spoolPath) return;
    await fs.unlink(this.spoolPath).catch(() => undefined);
    await this.options.guardian?.forgetTemporaryFile(this.spoolPath);
  }
}

/** A file path, '-' for stdin, or a readable stream. */
export async function openImageSource(input: string | Readable | AsyncIterable<Buffer>, options: ImageSourceOptions = {}): Promise<ImageSource> {
  if (typeof input !== 'string' || input === '-') return new SpooledStreamSource(typeof input === 'string' ? process.stdin : input, options);
  try {
    const stat = await fs.stat(input);
    if (!stat.isFile()) throw new IpcCkptError('E_USAGE', `${input} is not a regular file`);
  } catch (error) {
    if (error instanceof IpcCkptError) throw error;
    throw readError(input, error);
  }
  return new FileImageSource(input, options.signal);
}
