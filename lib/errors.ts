// The one error class of the package: every failure a user can see is an IpcCkptError.
import type { NativeErrorFields } from './native';

/** Project codes; a failed system call uses its errno name ('EPERM', 'EEXIST', ...) instead. */
export type IpcCkptCode =
  | 'E_USAGE'
  | 'E_TARGET' // the target is missing or not an IPC namespace
  | 'E_IMAGE_CORRUPT' // bytes that do not decode, or fail the integrity check
  | 'E_IMAGE_UNSUPPORTED' // a valid image this build or this host cannot take (arch, strict v16)
  | 'E_IMAGE_LIMIT' // a count or size beyond what the kernel allows
  | 'E_CONFLICT' // the target already holds an id or key the image needs, or lacks a mapping for one of its uids/gids
  | 'E_UNMAPPED_ID' // a queue's uid/gid has no mapping in the user namespace that owns the saved namespace
  | 'E_ID_MISMATCH' // the kernel gave another id than the one asked for
  | 'E_TORN' // a queue kept changing while it was copied
  | 'E_VERIFY' // the namespace differs from the image
  | 'E_FREEZE' // the cgroup freezer could not be used
  | 'E_OUTPUT'
  | 'E_LOCKED' // another run holds the namespace's lock (--no-wait, or --wait ran out)
  | 'E_GUARDIAN' // the rollback guardian could not start or died: the run rolled back by itself
  | 'E_INTERRUPTED' // a signal (or the caller's AbortSignal) ended the run; it rolled back
  | 'E_ADDON' // no addon fits this machine and none was built
  | 'E_INTERNAL';

export interface IpcCkptErrorOptions {
  errno?: number;
  syscall?: string;
  /** Byte offset in the image, for decode errors. */
  offset?: number;
  cause?: unknown;
}

export class IpcCkptError extends Error {
  override readonly name = 'IpcCkptError';
  readonly code: IpcCkptCode | string;
  readonly errno?: number;
  readonly syscall?: string;
  readonly offset?: number;

  constructor(code: IpcCkptCode | string, message: string, options: IpcCkptErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    if (options.errno !== undefined) this.errno = options.errno;
    if (options.syscall !== undefined) this.syscall = options.syscall;
    if (options.offset !== undefined) this.offset = options.offset;
  }
}

function isNativeError(error: unknown): error is NativeErrorFields {
  return typeof error === 'object' && error !== null && 'code' in error && 'errno' in error && 'syscall' in error;
}

/** Turns a native rejection into an IpcCkptError whose message starts with what was being done. */
export function fromNative(error: unknown, doing?: string): IpcCkptError {
  if (error instanceof IpcCkptError) return error;
  if (isNativeError(error)) {
    const message = doing ? `${doing}: ${error.message}` : error.message;
    return new IpcCkptError(error.code, message, { errno: error.errno, syscall: error.syscall, cause: error });
  }
  const message = error instanceof Error ? error.message : String(error);
  return new IpcCkptError('E_INTERNAL', doing ? `${doing}: ${message}` : message, { cause: error });
}

/** Awaits a native call and rethrows its failure as an IpcCkptError naming what was being done. */
export async function nativeCall<T>(doing: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    throw fromNative(error, doing);
  }
}

/** Ends a run that its AbortSignal aborted (the CLI's SIGINT/SIGTERM/SIGHUP): call between batches. */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (!signal?.aborted) return;
  if (signal.reason instanceof IpcCkptError) throw signal.reason;
  throw new IpcCkptError('E_INTERRUPTED', 'the run was aborted', { cause: signal.reason });
}
