// The queue hammer (test/fixtures/queue-hammer.c): senders and receivers that keep queues changing
// inside a namespace, and the exact checker of what a saved copy of a hammered queue may hold.
import { execFileSync, spawn, ChildProcess } from 'node:child_process';
import { mkdirSync, renameSync, rmdirSync, statSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import type { MessageRecord, QueueRecord } from '../../lib/image/model';

const fixturesDir = path.resolve(__dirname, '..', 'fixtures');
export const HAMMER_SOURCE = path.join(fixturesDir, 'queue-hammer.c');
export const HAMMER_BINARY = path.join(fixturesDir, 'bin', 'queue-hammer');

/** Builds the hammer if it is missing or older than its source; safe when jest workers race (temp name + rename). */
export function buildHammer(): string {
  try {
    if (statSync(HAMMER_BINARY).mtimeMs >= statSync(HAMMER_SOURCE).mtimeMs) return HAMMER_BINARY;
  } catch {
    // not built yet
  }
  mkdirSync(path.dirname(HAMMER_BINARY), { recursive: true });
  const temporary = `${HAMMER_BINARY}.${process.pid}.${Date.now()}.tmp`;
  execFileSync('gcc', ['-O2', '-Wall', '-Wextra', '-static', '-o', temporary, HAMMER_SOURCE], { stdio: ['ignore', 'ignore', 'pipe'] });
  renameSync(temporary, HAMMER_BINARY);
  return HAMMER_BINARY;
}

/** fifo: receives from the head only; typed: also receives the first message of type 2 from the middle. */
export type HammerKind = 'fifo' | 'typed';

export interface HammerSpec {
  kind: HammerKind;
  id: number;
  /** Body bytes of every message, or 0 for sizes that vary with the sequence number. */
  size: number;
}

export interface HammerOptions {
  /** Microseconds each hammer process sleeps after each call. */
  paceUs?: number;
  /** Senders send while a queue holds fewer than high messages; receivers take while it holds more than low. */
  backlog?: { low: number; high: number };
  /** Messages each sender sends at once, before READY, so a deep queue is there from the start. */
  prefill?: number;
  /** Freezer cgroup directory the hammer (and so its children) is moved into before it starts. */
  cgroup?: string;
}

/** The message the hammer sends as number n of a queue (see the header of queue-hammer.c). */
export function hammerMessage(spec: HammerSpec, n: bigint): MessageRecord {
  const size = spec.size !== 0 ? spec.size : 16 + Number(n % 5n) * 24;
  const type = spec.kind === 'fifo' ? 1n + (n % 3n) : 1n + (n % 2n);
  const body = Buffer.alloc(size);
  body.writeBigUInt64LE(n, 0);
  body.writeBigUInt64LE(BigInt.asUintN(64, n * 0x9e3779b97f4a7c15n) ^ BigInt(spec.id >>> 0), 8);
  for (let i = 16; i < size; i++) body[i] = Number((n + BigInt(i)) & 0xffn);
  return { type, body };
}

/**
 * Why a saved copy of a hammered queue is not a state the queue really had, or undefined when it is.
 * fifo: the messages are a run of consecutive numbers. typed (head receiver + type-2 receiver): with
 * lo/hi the first and last number held, every type-1 message in [lo, hi] is held (only the head
 * receiver takes type 1), and the type-2 messages held are all those from the first one held to hi
 * (the type-2 receiver always takes the oldest type 2).
 */
export function tornProblem(spec: HammerSpec, record: QueueRecord, messages: MessageRecord[]): string | undefined {
  if (record.qnum !== BigInt(messages.length)) return `q_qnum ${record.qnum} but ${messages.length} messages`;
  const bytes = messages.reduce((sum, m) => sum + m.body.length, 0);
  if (record.cbytes !== BigInt(bytes)) return `q_cbytes ${record.cbytes} but the messages hold ${bytes} bytes`;
  const numbers: bigint[] = [];
  for (const [index, message] of messages.entries()) {
    if (message.body.length < 16) return `message ${index} has ${message.body.length} bytes, fewer than the hammer sends`;
    const n = message.body.readBigUInt64LE(0);
    const expected = hammerMessage(spec, n);
    if (expected.type !== message.type || !expected.body.equals(message.body)) return `message ${index} (number ${n}) is not what the hammer sent as number ${n}`;
    if (index > 0 && n <= numbers[index - 1]) return `message ${index} (number ${n}) does not follow number ${numbers[index - 1]}`;
    numbers.push(n);
  }
  if (numbers.length === 0) return undefined;
  const lo = numbers[0];
  const hi = numbers[numbers.length - 1];
  const held = new Set(numbers);
  if (spec.kind === 'fifo') {
    for (let n = lo; n <= hi; n++) if (!held.has(n)) return `number ${n} is missing between ${lo} and ${hi}`;
    return undefined;
  }
  const firstTypeTwo = numbers.find((n) => n % 2n === 1n);
  for (let n = lo; n <= hi; n++) {
    const typeOne = n % 2n === 0n;
    const mustBeHeld = typeOne || (firstTypeTwo !== undefined && n >= firstTypeTwo);
    if (mustBeHeld && !held.has(n)) return `type-${typeOne ? 1 : 2} number ${n} is missing between ${lo} and ${hi}`;
  }
  return undefined;
}

/** A running hammer: its pid is the target for `save -t PID`. */
export class Hammer {
  private constructor(
    private readonly child: ChildProcess,
    readonly pid: number,
    private readonly stderr: () => string,
  ) {}

  static async start(nsPath: string, specs: HammerSpec[], options: HammerOptions = {}): Promise<Hammer> {
    const binary = buildHammer();
    const backlog = options.backlog ? ['--backlog', `${options.backlog.low}:${options.backlog.high}`] : [];
    const args = ['run', '--pace-us', String(options.paceUs ?? 200), '--prefill', String(options.prefill ?? 0), ...backlog, ...specs.map((s) => `${s.kind}:${s.id}:${s.size}`)];
    // With a cgroup, sh moves itself in and execs nsenter, which execs the hammer: one pid throughout.
    const child = options.cgroup
      ? spawn('sh', ['-c', 'echo $$ > "$1/cgroup.procs" && ns=$2 && shift 2 && exec nsenter --ipc="$ns" -- "$@"', 'sh', options.cgroup, nsPath, binary, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
      : spawn('nsenter', [`--ipc=${nsPath}`, '--', binary, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let errors = '';
    child.stderr?.on('data', (chunk: Buffer) => (errors += chunk.toString()));
    await new Promise<void>((resolve, reject) => {
      let out = '';
      child.stdout?.on('data', (chunk: Buffer) => {
        out += chunk.toString();
        if (out.includes('READY\n')) resolve();
      });
      child.once('exit', (status) => reject(new Error(`queue-hammer exited ${status} before READY: ${errors}`)));
      child.once('error', reject);
    });
    return new Hammer(child, child.pid!, () => errors);
  }

  /** True while the hammer and all its children run (a child that fails ends the hammer). */
  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Ends the hammer and its children; throws if it had failed on its own. */
  async stop(): Promise<void> {
    if (!this.running) throw new Error(`queue-hammer had stopped on its own: ${this.stderr()}`);
    const exited = new Promise<number | null>((resolve) => this.child.once('exit', (status) => resolve(status)));
    this.child.kill('SIGTERM');
    const status = await exited;
    if (status !== 0) throw new Error(`queue-hammer exited ${status}: ${this.stderr()}`);
  }
}

const FREEZER_ROOT = '/sys/fs/cgroup/freezer';

/** A child cgroup of the v1 freezer hierarchy, for `save --freeze -t PID`. */
export class FreezerCgroup {
  private constructor(readonly directory: string) {}

  static create(name: string): FreezerCgroup {
    const directory = path.join(FREEZER_ROOT, name);
    mkdirSync(directory);
    return new FreezerCgroup(directory);
  }

  get state(): string {
    return readFileSync(path.join(this.directory, 'freezer.state'), 'utf8').trim();
  }

  /** Thaws it (in case a test failed while it was frozen) and removes it once empty. */
  async remove(): Promise<void> {
    writeFileSync(path.join(this.directory, 'freezer.state'), 'THAWED');
    for (let attempt = 0; ; attempt++) {
      try {
        rmdirSync(this.directory);
        return;
      } catch (error) {
        if (attempt > 200) throw error;
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    }
  }
}
