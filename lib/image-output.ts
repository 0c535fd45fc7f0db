// Where save writes an image: a file (atomic: temporary file, fsync, rename) or a stream (stdout).
// Both can take back what was written since a mark, so a queue that changed while it was copied is re-copied.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Writable } from 'node:stream';
import { ImageDigest } from './image/encoder';
import { IpcCkptError } from './errors';

/** Write in large buffered chunks: one system call per this many bytes. */
const WRITE_CHUNK_BYTES = 4 << 20;
/** A stream can take back at most this much (it cannot seek): beyond it a torn queue fails the save. */
const STREAM_HOLD_BYTES = 16 << 20;

export interface OutputMark {
  position: number;
  digest: ImageDigest;
}

export abstract class ImageOutput {
  protected digest = new ImageDigest();
  /** Bytes written so far, rolled back ones excluded. */
  position = 0;
  protected held: Buffer[] = [];
  protected heldBytes = 0;
  /** Bytes already handed on below the hold (cannot be taken back by a stream). */
  protected flushedPosition = 0;
  /** A file's write still running while the next bytes are encoded and hashed (one at a time). */
  private inFlight: Promise<void> | undefined;

  write(chunk: Buffer): Promise<void> | void {
    this.digest.update(chunk);
    this.held.push(chunk);
    this.heldBytes += chunk.length;
    this.position += chunk.length;
    if (this.heldBytes >= this.flushThreshold()) return this.flushHeld();
  }

  mark(): OutputMark {
    return { position: this.position, digest: this.digest.copy() };
  }

  /** Drops every byte written since the mark. */
  async rollback(mark: OutputMark): Promise<void> {
    await this.drain();
    if (mark.position < this.flushedPosition) await this.unflush(mark.position);
    let keep = mark.position - this.flushedPosition;
    const kept: Buffer[] = [];
    for (const chunk of this.held) {
      if (keep <= 0) break;
      kept.push(chunk.length <= keep ? chunk : chunk.subarray(0, keep));
      keep -= chunk.length;
    }
    this.held = kept;
    this.heldBytes = mark.position - this.flushedPosition;
    this.position = mark.position;
    this.digest = mark.digest;
  }

  /** Bytes after the mark that can still be taken back; a stream says when it no longer can. */
  canRollback(mark: OutputMark): boolean {
    return mark.position >= this.flushedPosition || this.seekable();
  }

  /** Everything written so far is final (a queue was copied whole): a stream hands it on now. */
  async settle(): Promise<void> {
    if (!this.seekable()) await this.flushHeld();
  }

  /** The digest of every byte written so far. */
  currentDigest(): Buffer {
    return this.digest.copy().digest();
  }

  /**
   * Hands the held bytes on. A seekable output returns once the previous write is done and this one has
   * started, so the write overlaps with encoding and hashing the next bytes; its failure surfaces at the next call.
   */
  protected async flushHeld(): Promise<void> {
    await this.drain();
    if (this.heldBytes === 0) return;
    const chunks = this.held;
    this.held = [];
    const bytes = this.heldBytes;
    this.heldBytes = 0;
    const position = this.flushedPosition;
    this.flushedPosition += bytes;
    if (!this.seekable()) {
      await this.put(chunks, position);
      return;
    }
    this.inFlight = this.put(chunks, position);
    // Handled here so that a failure waits for drain() instead of ending the process as unhandled.
    this.inFlight.catch(() => undefined);
  }

  /** Waits for the write in flight, if any (and throws its failure). */
  protected async drain(): Promise<void> {
    const inFlight = this.inFlight;
    this.inFlight = undefined;
    await inFlight;
  }

  protected abstract flushThreshold(): number;
  protected abstract seekable(): boolean;
  protected abstract put(chunks: Buffer[], position: number): Promise<void>;
  protected abstract unflush(position: number): Promise<void>;
  /** Everything is written and durable; the image becomes visible. */
  abstract commit(): Promise<void>;
  /** Nothing of this image remains (a file's temporary is removed; a stream gets no more bytes). */
  abstract discard(): Promise<void>;
}

/** Temporaries of earlier saves to this path whose process is gone (killed before it could clean up). */
async function removeStaleTemporaries(directory: string, name: string): Promise<void> {
  const pattern = new RegExp(`^\\.${name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\.ipc-ckpt-(\\d+)-[0-9a-f]{8}\\.tmp$`);
  const entries = await fs.readdir(directory).catch(() => [] as string[]);
  for (const entry of entries) {
    const pid = pattern.exec(entry)?.[1];
    if (pid === undefined) continue;
    const alive = await fs.access(`/proc/${pid}`).then(() => true, () => false);
    if (!alive) await fs.unlink(path.join(directory, entry)).catch(() => undefined);
  }
}

/** A file written as a temporary beside it, fsync'ed and renamed over the path on commit. */
export class FileImageOutput extends ImageOutput {
  private constructor(
    private readonly finalPath: string,
    private readonly temporaryPath: string,
    private readonly handle: fs.FileHandle,
  ) {
    super();
  }

  static async create(finalPath: string): Promise<FileImageOutput> {
    const directory = path.dirname(path.resolve(finalPath));
    await removeStaleTemporaries(directory, path.basename(finalPath));
    const temporaryPath = path.join(directory, `.${path.basename(finalPath)}.ipc-ckpt-${process.pid}-${randomBytes(4).toString('hex')}.tmp`);
    let handle: fs.FileHandle;
    try {
      handle = await fs.open(temporaryPath, 'wx', 0o600);
    } catch (error) {
      const e = error as NodeJS.ErrnoException;
      throw new IpcCkptError(e.code ?? 'E_OUTPUT', `cannot create the image beside ${finalPath}: ${e.message}`, { errno: e.errno, syscall: e.syscall, cause: error });
    }
    return new FileImageOutput(finalPath, temporaryPath, handle);
  }

  protected flushThreshold(): number {
    return WRITE_CHUNK_BYTES;
  }

  protected seekable(): boolean {
    return true;
  }

  protected async put(chunks: Buffer[], position: number): Promise<void> {
    try {
      let offset = position;
      let pending = chunks;
      // writev without joining the chunks first: no second copy of every byte.
      while (pending.length > 0) {
        let { bytesWritten } = await this.handle.writev(pending, offset);
        offset += bytesWritten;
        let done = 0;
        while (done < pending.length && bytesWritten >= pending[done].length) bytesWritten -= pending[done++].length;
        pending = pending.slice(done);
        if (bytesWritten > 0) pending[0] = pending[0].subarray(bytesWritten);
      }
    } catch (error) {
      throw this.writeError(error);
    }
  }

  protected async unflush(position: number): Promise<void> {
    await this.handle.truncate(position);
    this.flushedPosition = position;
  }

  private writeError(error: unknown): IpcCkptError {
    const e = error as NodeJS.ErrnoException;
    return new IpcCkptError(e.code ?? 'E_OUTPUT', `writing the image to ${this.finalPath}: ${e.message}`, { errno: e.errno, syscall: e.syscall, cause: error });
  }

  async commit(): Promise<void> {
    await this.flushHeld();
    await this.drain();
    try {
      await this.handle.truncate(this.position);
      await this.handle.sync();
      await this.handle.close();
      await fs.rename(this.temporaryPath, this.finalPath);
    } catch (error) {
      await this.discard();
      throw this.writeError(error);
    }
    // The rename is durable only once the directory is synced.
    const directory = await fs.open(path.dirname(path.resolve(this.finalPath)), 'r');
    try {
      await directory.sync();
    } finally {
      await directory.close();
    }
  }

  async discard(): Promise<void> {
    await this.drain().catch(() => undefined);
    await this.handle.close().catch(() => undefined);
    await fs.unlink(this.temporaryPath).catch(() => undefined);
  }
}

/** A stream such as stdout: holds back up to STREAM_HOLD_BYTES so a torn queue can be re-copied. */
export class StreamImageOutput extends ImageOutput {
  private failed: Error | undefined;

  constructor(private readonly stream: Writable) {
    super();
    stream.on('error', (error) => {
      this.failed = error;
    });
  }

  protected flushThreshold(): number {
    return STREAM_HOLD_BYTES;
  }

  protected seekable(): boolean {
    return false;
  }

  protected async put(chunks: Buffer[]): Promise<void> {
    for (const chunk of chunks) {
      if (this.failed) throw this.streamError(this.failed);
      if (!this.stream.write(chunk)) {
        await new Promise<void>((resolve, reject) => {
          const onError = (error: Error) => reject(this.streamError(error));
          this.stream.once('drain', () => {
            this.stream.off('error', onError);
            resolve();
          });
          this.stream.once('error', onError);
        });
      }
    }
  }

  private streamError(error: Error): IpcCkptError {
    const e = error as NodeJS.ErrnoException;
    return new IpcCkptError(e.code ?? 'E_OUTPUT', `writing the image to the output stream: ${e.message}`, { cause: error });
  }

  protected async unflush(): Promise<void> {
    throw new IpcCkptError('E_TORN', 'a queue changed while it was copied, and the part already written to the stream cannot be taken back');
  }

  async commit(): Promise<void> {
    await this.flushHeld();
  }

  async discard(): Promise<void> {
    this.held = [];
    this.heldBytes = 0;
  }
}
