// Where save writes an image: a file (atomic: temporary file, fsync, rename) or a stream (stdout).
// Both can take back what was written since a mark, so a queue that changed while it was copied is re-copied.
import { constants as fsConstants, createWriteStream, promises as fs } from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Writable } from 'node:stream';
import { ImageDigest } from './image/encoder';
import { IpcCkptError, throwIfAborted } from './errors';
import type { RollbackGuardian } from './rollback-guardian';

/** Write in large buffered chunks: one system call per this many bytes. */
const WRITE_CHUNK_BYTES = 4 << 20;
/**
 * A file's written bytes are flushed to disk (fdatasync, in the background, one at a time) once this many more
 * are written, the amount doubling from the first to the last, so little is left for the final fsync of a small
 * image and a large one is not flushed in many small pieces. Each 64 MiB alone left a 64 MiB save waiting
 * 21 ms at commit; each 4 MiB alone made a 1 GiB save slower (medians of 5, alternating: 1.74 s against 1.32).
 */
const FIRST_BACKGROUND_SYNC_BYTES = 4 << 20;
const LAST_BACKGROUND_SYNC_BYTES = 64 << 20;
/**
 * A stream can take back at most this much (it cannot seek): beyond it a torn queue fails the save.
 * 16 MiB kept a 1 GiB save to stdout at 150-154 MB peak RSS; 8 MiB at 105-118 MB.
 */
const STREAM_HOLD_BYTES = 8 << 20;

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

/**
 * How `-o PATH` is written: atomically to `path` (a new path or a regular file), as a stream into an
 * existing special file, or into one of our own descriptors (/dev/stdout: a socket cannot be opened anew).
 */
export type OutputPlan = { kind: 'atomic'; path: string } | { kind: 'special'; path: string } | { kind: 'descriptor'; path: string; fd: number };

/** Where resolving filePath goes through a /proc/PID/fd link (/dev/stdout, /dev/fd/N): an open file, not a place; fd when it is one of ours. */
async function throughOpenFile(filePath: string): Promise<{ fd?: number } | undefined> {
  let current = path.resolve(filePath);
  for (let hop = 0; hop < 40; hop++) {
    const open = /^\/proc\/(self|thread-self|\d+)\/fd\/(\d+)$/.exec(current);
    if (open) return { fd: open[1] === 'self' || open[1] === String(process.pid) ? Number(open[2]) : undefined };
    const link = await fs.readlink(current).catch(() => undefined);
    if (link === undefined) return undefined;
    current = path.resolve(path.dirname(current), link);
  }
  return undefined;
}

/** Decides how to write filePath before any work: '' and directories are usage errors. */
export async function planOutputPath(filePath: string): Promise<OutputPlan> {
  if (filePath === '') throw new IpcCkptError('E_USAGE', "-o takes a file path ('-' for stdout), not an empty string");
  const stat = await fs.stat(filePath).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined;
    throw new IpcCkptError(error.code ?? 'E_OUTPUT', `cannot use ${filePath} as the output: ${error.message}`, { errno: error.errno, syscall: error.syscall, cause: error });
  });
  if (stat?.isDirectory()) throw new IpcCkptError('E_USAGE', `-o ${filePath} is a directory: give a file path in it`);
  const openFile = stat ? await throughOpenFile(filePath) : undefined;
  if (openFile?.fd !== undefined) return { kind: 'descriptor', path: filePath, fd: openFile.fd };
  if (stat && (!stat.isFile() || openFile)) return { kind: 'special', path: filePath };
  // A symlink to a regular file: replace the file it points to, not the link.
  return { kind: 'atomic', path: stat ? await fs.realpath(filePath) : filePath };
}

export interface OutputOptions {
  /** Told of the temporary file before it is made: it removes it if we are killed. */
  guardian?: RollbackGuardian;
  signal?: AbortSignal;
}

/** The output for an OutputPlan: a temporary renamed into place, or a stream into the special file (never replaced). */
export async function openOutputPath(plan: OutputPlan, options: OutputOptions = {}): Promise<ImageOutput> {
  if (plan.kind === 'atomic') return FileImageOutput.create(plan.path, options.guardian);
  if (plan.kind === 'descriptor') {
    const stream = plan.fd === 1 ? process.stdout : createWriteStream('', { fd: plan.fd, autoClose: false });
    return new StreamImageOutput(stream, { signal: options.signal, label: plan.path });
  }
  // Append, never truncate: /dev/stdout opened anew must not cut what the shell redirected before us.
  const stream = createWriteStream(plan.path, { flags: 'a' });
  await new Promise<void>((resolve, reject) => {
    stream.once('open', () => resolve());
    stream.once('error', (error: NodeJS.ErrnoException) =>
      reject(new IpcCkptError(error.code ?? 'E_OUTPUT', `cannot open ${plan.path} for writing: ${error.message}`, { errno: error.errno, syscall: error.syscall, cause: error })),
    );
  });
  return new StreamImageOutput(stream, { ownsStream: true, signal: options.signal, label: plan.path });
}

/**
 * The image a rename will replace, held open so that freeing its blocks (12 ms for 64 MiB on ext4, inside
 * rename(2) when it drops the last link) waits for our close instead. Non-blocking: a lease holder's file is left alone.
 */
async function openReplacedFile(filePath: string): Promise<fs.FileHandle | undefined> {
  return fs.open(filePath, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK | fsConstants.O_NOFOLLOW).catch(() => undefined);
}

/** A file written as a temporary beside it, fsync'ed and renamed over the path on commit. */
export class FileImageOutput extends ImageOutput {
  /** Written since the last background sync began. */
  private unsyncedBytes = 0;
  /** Written bytes that start the next background sync. */
  private syncEveryBytes = FIRST_BACKGROUND_SYNC_BYTES;
  /** The background fdatasync running, if any: the disk writes while we copy and encode, not all at commit. */
  private syncing: Promise<void> | undefined;
  private syncFailure: unknown;

  private constructor(
    private readonly finalPath: string,
    private readonly temporaryPath: string,
    private readonly handle: fs.FileHandle,
    private readonly guardian: RollbackGuardian | undefined,
  ) {
    super();
  }

  static async create(finalPath: string, guardian?: RollbackGuardian): Promise<FileImageOutput> {
    const directory = path.dirname(path.resolve(finalPath));
    await removeStaleTemporaries(directory, path.basename(finalPath));
    const temporaryPath = path.join(directory, `.${path.basename(finalPath)}.ipc-ckpt-${process.pid}-${randomBytes(4).toString('hex')}.tmp`);
    // Registered before it exists: a kill right after the open must not leave it.
    await guardian?.registerTemporaryFile(temporaryPath);
    let handle: fs.FileHandle;
    try {
      handle = await fs.open(temporaryPath, 'wx', 0o600);
    } catch (error) {
      const e = error as NodeJS.ErrnoException;
      throw new IpcCkptError(e.code ?? 'E_OUTPUT', `cannot create the image beside ${finalPath}: ${e.message}`, { errno: e.errno, syscall: e.syscall, cause: error });
    }
    return new FileImageOutput(finalPath, temporaryPath, handle, guardian);
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
    if (this.syncFailure !== undefined) throw this.writeError(this.syncFailure);
    for (const chunk of chunks) this.unsyncedBytes += chunk.length;
    if (this.unsyncedBytes >= this.syncEveryBytes && this.syncing === undefined) {
      this.unsyncedBytes = 0;
      this.syncEveryBytes = Math.min(2 * this.syncEveryBytes, LAST_BACKGROUND_SYNC_BYTES);
      this.syncing = this.handle.datasync().then(
        () => {
          this.syncing = undefined;
        },
        (error: unknown) => {
          this.syncFailure = error;
          this.syncing = undefined;
        },
      );
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
    await this.syncing;
    let replaced: fs.FileHandle | undefined;
    try {
      if (this.syncFailure !== undefined) throw this.syncFailure;
      await this.handle.truncate(this.position);
      await this.handle.sync();
      await this.handle.close();
      replaced = await openReplacedFile(this.finalPath);
      await fs.rename(this.temporaryPath, this.finalPath);
    } catch (error) {
      await replaced?.close().catch(() => undefined);
      await this.discard();
      throw this.writeError(error);
    }
    await this.guardian?.forgetTemporaryFile(this.temporaryPath);
    // The rename is durable only once the directory is synced.
    const directory = await fs.open(path.dirname(path.resolve(this.finalPath)), 'r');
    try {
      // The replaced image's blocks are freed at its last close: on a pool thread, while the directory syncs.
      await Promise.all([directory.sync(), replaced?.close()]);
    } finally {
      await directory.close();
    }
  }

  async discard(): Promise<void> {
    await this.drain().catch(() => undefined);
    await this.syncing;
    await this.handle.close().catch(() => undefined);
    await fs.unlink(this.temporaryPath).catch(() => undefined);
    await this.guardian?.forgetTemporaryFile(this.temporaryPath);
  }
}

export interface StreamOutputOptions {
  /** The output opened the stream (a special file): commit ends it, discard destroys it. */
  ownsStream?: boolean;
  /** A wait for the reader (drain) ends with the signal's reason. */
  signal?: AbortSignal;
  /** How messages name the stream. */
  label?: string;
}

/** A stream such as stdout: holds back up to STREAM_HOLD_BYTES so a torn queue can be re-copied. */
export class StreamImageOutput extends ImageOutput {
  private failed: Error | undefined;

  constructor(
    private readonly stream: Writable,
    private readonly options: StreamOutputOptions = {},
  ) {
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
        const { signal } = this.options;
        throwIfAborted(signal);
        await new Promise<void>((resolve, reject) => {
          const onError = (error: Error) => done(() => reject(this.streamError(error)));
          const onAbort = () => done(() => reject(signal?.reason));
          const onDrain = () => done(resolve);
          const done = (then: () => void) => {
            this.stream.off('error', onError).off('drain', onDrain);
            signal?.removeEventListener('abort', onAbort);
            then();
          };
          this.stream.once('drain', onDrain);
          this.stream.once('error', onError);
          signal?.addEventListener('abort', onAbort, { once: true });
        });
      }
    }
  }

  private streamError(error: Error): IpcCkptError {
    const e = error as NodeJS.ErrnoException;
    return new IpcCkptError(e.code ?? 'E_OUTPUT', `writing the image to ${this.options.label ?? 'the output stream'}: ${e.message}`, { cause: error });
  }

  protected async unflush(): Promise<void> {
    throw new IpcCkptError('E_TORN', 'a queue changed while it was copied, and the part already written to the stream cannot be taken back');
  }

  async commit(): Promise<void> {
    await this.flushHeld();
    if (!this.options.ownsStream) return;
    await new Promise<void>((resolve, reject) => {
      this.stream.once('error', (error) => reject(this.streamError(error)));
      this.stream.end(() => resolve());
    });
  }

  async discard(): Promise<void> {
    this.held = [];
    this.heldBytes = 0;
    if (this.options.ownsStream) this.stream.destroy();
  }
}
