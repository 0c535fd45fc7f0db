// One lock per IPC namespace, keyed by the namespace's identity (the nsfs inode, not the path that
// names it), held by every run that changes or depends on the namespace's limits: flock(2) on a
// file under /run/ipc-ckpt. Runs that only read take it shared, runs that change the namespace
// exclusive. The kernel releases it when its holders die; the rollback guardian inherits the
// descriptor, so after a SIGKILL the lock stays held until the guardian has rolled back.
import { closeSync, fstatSync, mkdirSync, openSync, readFileSync, statSync, constants as fsConstants } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { IpcCkptError, throwIfAborted } from './errors';
import { loadNative } from './native';
import type { ResolvedTarget } from './target';

export type LockMode = 'shared' | 'exclusive';

export interface LockOptions {
  /** Seconds to wait for another run's lock: Infinity (the default) waits as long as it takes, 0 fails at once. */
  waitSeconds?: number;
  /** Called once when the run has to wait, with a line that says who holds the lock. */
  onLockWait?: (text: string) => void;
  signal?: AbortSignal;
}

/** Where the lock files live: IPC_CKPT_LOCK_DIR, else /run/ipc-ckpt (a tmpfs: nothing outlives a reboot). */
export const LOCK_DIR_ENV = 'IPC_CKPT_LOCK_DIR';
const DEFAULT_LOCK_DIR = '/run/ipc-ckpt';
const POLL_MS = 25;

function lockDirectory(): string {
  const wanted = process.env[LOCK_DIR_ENV] ?? DEFAULT_LOCK_DIR;
  try {
    mkdirSync(wanted, { recursive: true, mode: 0o755 });
    return wanted;
  } catch (error) {
    if (process.env[LOCK_DIR_ENV] !== undefined) throw lockError(`cannot create the lock directory ${wanted}`, error);
    // Without write access to /run (not root): a per-user directory.
    const fallback = path.join(os.tmpdir(), `ipc-ckpt-locks-${process.getuid?.() ?? 'user'}`);
    mkdirSync(fallback, { recursive: true, mode: 0o700 });
    return fallback;
  }
}

function lockError(what: string, error: unknown): IpcCkptError {
  const e = error as NodeJS.ErrnoException;
  return new IpcCkptError(e.code ?? 'E_LOCKED', `${what}: ${e.message}`, { errno: e.errno, syscall: e.syscall, cause: error });
}

/** The pids /proc/locks names as holders of the lock file's inode, with their lock kind. */
function holders(file: string): string {
  try {
    const { ino } = statSync(file, { bigint: true });
    const found = readFileSync('/proc/locks', 'utf8')
      .split('\n')
      .map((line) => /^\d+:\s+FLOCK\s+\S+\s+(READ|WRITE)\s+(-?\d+)\s+[0-9a-f]+:[0-9a-f]+:(\d+)\s/.exec(line))
      .filter((m): m is RegExpExecArray => m !== null && BigInt(m[3]) === ino)
      .map((m) => `pid ${m[2]}${m[1] === 'READ' ? ' (shared)' : ''}`);
    return found.length > 0 ? found.join(', ') : 'a process that just let it go';
  } catch {
    return 'another process';
  }
}

function openLockFile(file: string): number {
  try {
    return openSync(file, fsConstants.O_RDONLY | fsConstants.O_CREAT, 0o644);
  } catch (error) {
    throw lockError(`cannot open the lock file ${file}`, error);
  }
}

/** True while `file` still names the inode fd is open on (someone may have cleaned the directory up meanwhile). */
function stillNamed(fd: number, file: string): boolean {
  try {
    return statSync(file, { bigint: true }).ino === fstatSync(fd, { bigint: true }).ino;
  } catch {
    return false;
  }
}

export class NamespaceLock {
  private constructor(
    public fd: number,
    readonly file: string,
    private readonly label: string,
    public mode: LockMode,
  ) {}

  /** Takes the lock of target's namespace in `mode`, waiting as options say. */
  static async acquire(target: ResolvedTarget, mode: LockMode, options: LockOptions = {}): Promise<NamespaceLock> {
    const nsFile = target.nsPath === '' ? '/proc/self/ns/ipc' : target.nsPath;
    let identity: { dev: bigint; ino: bigint };
    try {
      identity = statSync(nsFile, { bigint: true });
    } catch (error) {
      throw lockError(`cannot identify the IPC namespace ${target.label}`, error);
    }
    const file = path.join(lockDirectory(), `ipc-ns-${identity.dev}-${identity.ino}.lock`);
    const lock = new NamespaceLock(openLockFile(file), file, target.label, mode);
    try {
      await lock.take(mode, options);
    } catch (error) {
      closeSync(lock.fd);
      throw error;
    }
    return lock;
  }

  private async take(mode: LockMode, options: LockOptions): Promise<void> {
    const waitMs = (options.waitSeconds ?? Infinity) * 1000;
    const started = Date.now();
    let told = false;
    for (;;) {
      throwIfAborted(options.signal);
      if (loadNative().lockFile(this.fd, mode)) {
        this.mode = mode;
        if (stillNamed(this.fd, this.file)) return;
        // The file was removed between our open and our lock: lock the one there now.
        closeSync(this.fd);
        this.fd = openLockFile(this.file);
        continue;
      }
      const who = holders(this.file);
      if (Date.now() - started >= waitMs) {
        throw new IpcCkptError('E_LOCKED', `another ipc-ckpt run holds the lock of ${this.label} (${who}; ${this.file})${waitMs > 0 ? ` after ${options.waitSeconds} s of waiting` : ''}`);
      }
      if (!told) {
        told = true;
        options.onLockWait?.(`waiting for the lock of ${this.label}, held by ${who} (${this.file})`);
      }
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  }

  /**
   * From shared to exclusive, before changing a limit. flock converts by letting the shared lock go
   * first, so other runs may change the namespace meanwhile: re-read what the change depends on.
   */
  async upgrade(options: LockOptions = {}): Promise<void> {
    if (this.mode === 'exclusive') return;
    await this.take('exclusive', options);
  }

  /**
   * Closes our descriptor (the lock goes with it unless the guardian still holds it). The file stays:
   * a run that lets the shared lock go to upgrade could otherwise lock a removed file. One empty file
   * per namespace ever locked, in a tmpfs.
   */
  release(): void {
    closeSync(this.fd);
  }
}
