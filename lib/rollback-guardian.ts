// A watcher process that undoes our changes to a namespace if this process dies before it is done
// (SIGKILL included): it removes the queues a restore created, puts raised sysctls and a frozen
// cgroup back, and removes our temporary files. The program is native/rollback_guardian.cc (a
// single-threaded C++ program beside the addon): it starts in about a millisecond, joins the target
// namespace itself, and rolls back in one walk over the namespace's queue slots.
import { spawn, ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { IpcCkptError } from './errors';
import { guardianFile, MsgSysctlName } from './native';
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

/**
 * Started on the first registration (a run that changes nothing starts no process). Every
 * registration waits for the guardian's acknowledgement: it knows of a change before the change is made.
 */
export class RollbackGuardian {
  private child: ChildProcess | undefined;
  private readonly pending: Array<(line: string) => void> = [];
  private chain: Promise<unknown> = Promise.resolve();
  private finished = false;
  private exited = false;
  private startupText = '';
  private deathReason: string | undefined;
  private exitPromise: Promise<void> | undefined;

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
    return this.child !== undefined;
  }

  private spawnChild(): void {
    const program = guardianFile();
    const stdio: Array<'pipe' | 'inherit' | number> = ['pipe', 'pipe', 'inherit'];
    if (this.options.lockFd !== undefined) stdio.push(this.options.lockFd);
    // Its own process group: a Ctrl-C or kill of our group must not take the guardian down with us.
    const child = spawn(program, [this.target.nsPath], { detached: true, stdio });
    this.child = child;
    this.pending.push((line) => {
      this.startupText = line;
    });
    createInterface({ input: child.stdout! }).on('line', (line) => this.pending.shift()?.(line));
    child.stdin!.on('error', () => undefined); // EPIPE once it died: reported through 'exit'
    const ended = (why: string) => {
      if (this.exited) return;
      this.exited = true;
      if (!this.finished) this.deathReason = why;
      for (const reply of this.pending.splice(0)) reply('exited');
    };
    this.exitPromise = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        ended(signal ? `it was killed by ${signal}` : `it exited with status ${code}`);
        resolve();
      });
      child.on('error', (error) => {
        ended(`${program} could not be started: ${error.message}`);
        resolve();
      });
    });
  }

  private deathError(): IpcCkptError {
    const startup = this.startupText.startsWith('error ') ? this.startupText.slice('error '.length) : undefined;
    const what = startup ?? this.deathReason ?? 'it is gone';
    return new IpcCkptError('E_GUARDIAN', `the rollback guardian ${this.startupText === 'ready' ? 'died' : 'could not start'} (${what}); nothing is left to it`);
  }

  /** True when the guardian died under us (it was started and exited before finish()). */
  get dead(): boolean {
    return this.child !== undefined && this.exited && !this.finished;
  }

  /** Throws when the guardian died under us: the run must roll back by itself and stop. */
  throwIfDead(): void {
    if (this.dead) throw this.deathError();
  }

  private send(line: string): Promise<void> {
    if (this.finished) return Promise.reject(new IpcCkptError('E_INTERNAL', 'rollback guardian already finished'));
    const sent = this.chain.then(async () => {
      if (!this.child) this.spawnChild();
      this.throwIfDead();
      const reply = new Promise<string>((resolve) => this.pending.push(resolve));
      this.child!.stdin!.write(`${line}\n`);
      const answer = await reply;
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
    if (!this.child) return;
    if (!this.exited) this.child.stdin!.end('done\n');
    await this.exitPromise;
  }
}
