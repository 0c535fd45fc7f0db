// A watcher process that undoes our changes to a namespace if this process dies before it is done
// (SIGKILL included): it removes the queues a restore created, puts raised sysctls and a frozen
// cgroup back, and removes our temporary files. The program is native/rollback_guardian.cc (a
// single-threaded C++ program beside the addon): it starts in about a millisecond, joins the target
// namespace itself, and rolls back in one walk over the namespace's queue slots.
import { closeSync, readSync, writeSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { IpcCkptError } from './errors';
import { guardianFile, loadNative, type ChildEnd, type DetachedChild, type MsgSysctlName } from './native';
import type { ResolvedTarget } from './target';

export interface GuardedWriteOptions {
  /** Write the value back with this effective uid (a user-namespaced IPC namespace's root: host root gets EACCES). */
  writeAsUid?: number;
  writeAsGid?: number;
}

/** The name issue 11 used for the same options. */
export type FileRestoreOptions = GuardedWriteOptions;

export interface GuardianOptions {
  /** The namespace lock's file descriptor: the guardian keeps it open, so the lock outlives us until the rollback is over. */
  lockFd?: number;
}

/** Queue registrations per protocol line: a batch of 32,768 queues is a few lines. */
const QUEUES_PER_LINE = 4096;

function checkedId(what: string, value: number | undefined): string {
  if (value === undefined) return '-';
  if (!Number.isInteger(value) || value < 0 || value > 0xfffffffe) throw new IpcCkptError('E_INTERNAL', `${what} ${value} is not a uid/gid`);
  return String(value);
}

/** "it was killed by SIGKILL" / "it exited with status 1". */
function describeEnd(end: ChildEnd): string {
  if (end.signal === null) return `it exited with status ${end.code}`;
  const name = Object.entries(osConstants.signals).find(([, number]) => number === end.signal)?.[0];
  return `it was killed by ${name ?? `signal ${end.signal}`}`;
}

/**
 * Started on the first registration (a run that changes nothing starts no process). Every
 * registration waits for the guardian's acknowledgement: it knows of a change before the change is made.
 * The process comes from the addon (posix_spawn) and speaks over two pipes with blocking reads and writes:
 * an acknowledgement takes microseconds, and the CLI loads neither child_process nor net nor readline.
 */
export class RollbackGuardian {
  private child: DetachedChild | undefined;
  private spawned = false;
  private chain: Promise<unknown> = Promise.resolve();
  private finished = false;
  private exited = false;
  private reaped = false;
  private startupText = '';
  private deathReason: string | undefined;
  /** What was read after the last complete line. */
  private unread = '';
  private readonly readBuffer = Buffer.allocUnsafe(512);

  constructor(
    private readonly target: ResolvedTarget,
    private readonly options: GuardianOptions = {},
  ) {}

  /** Kept for callers of the earlier interface: the process starts on the first registration. */
  static start(target: ResolvedTarget, options: GuardianOptions = {}): RollbackGuardian {
    return new RollbackGuardian(target, options);
  }

  /** True once the process was started (something was registered). */
  get started(): boolean {
    return this.spawned;
  }

  private spawnChild(): void {
    this.spawned = true;
    const program = guardianFile();
    try {
      this.child = loadNative().spawnDetached(program, [this.target.nsPath], this.options.lockFd ?? -1);
    } catch (error) {
      // "starting PROGRAM: No such file or directory (ENOENT)"
      const { message, code } = error as NodeJS.ErrnoException;
      this.ended(`${message}${code ? ` (${code})` : ''}`);
      return;
    }
    this.startupText = this.readLine();
  }

  /** It is gone (or never came): why, unless we were done with it anyway. */
  private ended(why: string): void {
    if (this.exited) return;
    this.exited = true;
    if (!this.finished) this.deathReason = why;
  }

  /** waitpid: blocking once it closed its pipes or was told "done"; a poll between batches otherwise. */
  private reap(wait: boolean): ChildEnd | undefined {
    if (!this.child || this.reaped) return undefined;
    const end = loadNative().reapChild(this.child.pid, wait);
    if (end !== undefined) this.reaped = true;
    return end;
  }

  /** Its end of the pipes closed: it exited or was killed. */
  private endedAtEof(): void {
    const end = this.reap(true);
    this.ended(end ? describeEnd(end) : 'it closed its pipes');
  }

  /** The next line it wrote, or 'exited' once it is gone. */
  private readLine(): string {
    const child = this.child;
    if (!child || this.exited) return 'exited';
    for (;;) {
      const newline = this.unread.indexOf('\n');
      if (newline >= 0) {
        const line = this.unread.slice(0, newline);
        this.unread = this.unread.slice(newline + 1);
        return line;
      }
      let count: number;
      try {
        count = readSync(child.output, this.readBuffer, 0, this.readBuffer.length, null);
      } catch (error) {
        this.ended(`reading its replies failed: ${(error as Error).message}`);
        return 'exited';
      }
      if (count === 0) {
        this.endedAtEof();
        return 'exited';
      }
      this.unread += this.readBuffer.toString('latin1', 0, count);
    }
  }

  /** Writes every byte of text to its stdin; false when it is gone (EPIPE). */
  private writeAll(text: string): boolean {
    const child = this.child;
    if (!child || this.exited) return false;
    const bytes = Buffer.from(text, 'utf8');
    try {
      for (let at = 0; at < bytes.length; ) at += writeSync(child.input, bytes, at, bytes.length - at);
      return true;
    } catch {
      this.endedAtEof();
      return false;
    }
  }

  private deathError(): IpcCkptError {
    const startup = this.startupText.startsWith('error ') ? this.startupText.slice('error '.length) : undefined;
    const what = startup ?? this.deathReason ?? 'it is gone';
    return new IpcCkptError('E_GUARDIAN', `the rollback guardian ${this.startupText === 'ready' ? 'died' : 'could not start'} (${what}); nothing is left to it`);
  }

  /** True when the guardian died under us (it was started and exited before finish()). */
  get dead(): boolean {
    if (this.spawned && !this.exited && !this.finished) {
      const end = this.reap(false);
      if (end !== undefined) this.ended(describeEnd(end));
    }
    return this.spawned && this.exited && !this.finished;
  }

  /** Throws when the guardian died under us: the run must roll back by itself and stop. */
  throwIfDead(): void {
    if (this.dead) throw this.deathError();
  }

  private send(line: string): Promise<void> {
    if (this.finished) return Promise.reject(new IpcCkptError('E_INTERNAL', 'rollback guardian already finished'));
    const sent = this.chain.then(() => {
      if (!this.spawned) this.spawnChild();
      this.throwIfDead();
      const answer = this.writeAll(`${line}\n`) ? this.readLine() : 'exited';
      if (answer !== 'ok') {
        if (answer === 'exited') throw this.deathError();
        throw new IpcCkptError('E_INTERNAL', `the rollback guardian refused '${line.slice(0, 80)}': ${answer}`);
      }
    });
    this.chain = sent.catch(() => undefined);
    return sent;
  }

  /** Forgetting matters only to a live guardian: a dead one will undo nothing anyway. */
  private sendIfAlive(line: string): Promise<void> {
    if (!this.child || this.exited || this.finished) return Promise.resolve();
    return this.send(line).catch((error: unknown) => {
      if (!this.exited) throw error;
    });
  }

  /** Call before changing a file such as a sysctl or a freezer state: the guardian writes the value back if we die. */
  registerFileRestore(filePath: string, originalValue: string, options: GuardedWriteOptions = {}): Promise<void> {
    if (/\s/.test(originalValue) || originalValue === '' || filePath.includes('\n') || filePath === '') {
      return Promise.reject(new IpcCkptError('E_INTERNAL', `cannot guard ${JSON.stringify(filePath)}`));
    }
    return this.send(`file ${checkedId('uid', options.writeAsUid)} ${checkedId('gid', options.writeAsGid)} ${originalValue} ${filePath}`);
  }

  /** The guardian puts a sysctl of the namespace back if we die (as options.writeAsUid/Gid when given). */
  registerSysctl(name: MsgSysctlName, originalValue: number, options: GuardedWriteOptions = {}): Promise<void> {
    return this.registerFileRestore(`/proc/sys/kernel/${name}`, String(Math.trunc(originalValue)), options);
  }

  /** Call before msg_next_id is first written: if we die before the msgget that consumes it, the guardian unsets it. */
  registerNextIdReset(): Promise<void> {
    return this.send('nextid');
  }

  /** Call before the queues are created: if we die, the guardian removes each that still has this id and key. One round trip. */
  async registerQueues(queues: Array<{ id: number; key: number }>): Promise<void> {
    for (let first = 0; first < queues.length; first += QUEUES_PER_LINE) {
      const words = queues.slice(first, first + QUEUES_PER_LINE).map((q) => `${Math.trunc(q.id)} ${q.key >>> 0}`);
      await this.send(`queues ${words.join(' ')}`);
    }
  }

  registerQueue(id: number, key: number): Promise<void> {
    return this.registerQueues([{ id, key }]);
  }

  /** The queues were removed by us already (or never made). */
  async forgetQueues(ids: number[]): Promise<void> {
    for (let first = 0; first < ids.length; first += QUEUES_PER_LINE) {
      await this.sendIfAlive(`forget ${ids.slice(first, first + QUEUES_PER_LINE).map((id) => Math.trunc(id)).join(' ')}`);
    }
  }

  forgetQueue(id: number): Promise<void> {
    return this.forgetQueues([id]);
  }

  /** Call before a POSIX queue is created: if we die, the guardian unlinks the queue of this name (mq_unlink in the namespace). */
  registerPosixQueue(name: string): Promise<void> {
    return this.send(`mqueue ${Buffer.from(name, 'utf8').toString('hex')}`);
  }

  /** The POSIX queue was removed by us already (or never made). */
  forgetPosixQueue(name: string): Promise<void> {
    return this.sendIfAlive(`forget-mqueue ${Buffer.from(name, 'utf8').toString('hex')}`);
  }

  /** A temporary file of ours (an image being written, a stdin spool): removed by the guardian if we die. */
  registerTemporaryFile(filePath: string): Promise<void> {
    if (filePath.includes('\n') || filePath === '') return Promise.reject(new IpcCkptError('E_INTERNAL', `cannot guard ${JSON.stringify(filePath)}`));
    return this.send(`temp ${filePath}`);
  }

  /** The file was renamed into place or removed by us. */
  forgetTemporaryFile(filePath: string): Promise<void> {
    return this.sendIfAlive(`untemp ${filePath}`);
  }

  /** Our own work is complete (or rolled back by us): the guardian exits without touching anything. */
  async finish(): Promise<void> {
    if (this.finished) return;
    await this.chain;
    this.finished = true;
    const child = this.child;
    if (!child) return;
    if (!this.exited) this.writeAll('done\n');
    // It exits at once on "done" (or is gone already); its exit releases its copy of the namespace lock.
    this.reap(true);
    this.exited = true;
    closeSync(child.input);
    closeSync(child.output);
  }
}
