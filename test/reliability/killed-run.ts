// Runs the CLI and SIGKILLs it after a delay, then waits until every process it left working on the
// namespace (the rollback guardian) has finished.
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { CLI, CliResult } from '../support/cli';
import { dumpNamespace, msgqTool, NamespaceDump } from '../support/msgq-tool';
import { TestNamespace } from '../support/namespace';

export interface KilledRun extends CliResult {
  /** True when the process was still running at the kill (false: it had exited on its own first). */
  killed: boolean;
  /** The signal that ended the process, when one did (its handlers were not in place yet). */
  exitSignal: NodeJS.Signals | null;
  stdoutBytes: Buffer;
}

export interface KillPlan {
  /** Milliseconds to wait before the kill: after the start, or after the guardian appears. */
  delayMs: number;
  /** Count the delay from the moment a process (the rollback guardian) appears at this namespace. */
  afterGuardianOf?: TestNamespace;
  /** Processes (and their children) that live in that namespace anyway: not taken for the guardian. */
  workload?: number[];
  /** Count the delay from the moment this returns true (polled every millisecond; given the CLI's pid). */
  when?: (pid: number) => boolean;
  /** The signal to send (SIGKILL unless given). */
  signal?: NodeJS.Signals;
  /** Bytes written to the CLI's stdin (else stdin is closed). */
  input?: Buffer;
}

/** Runs `ipc-ckpt ...args` and sends SIGKILL as planned, unless it exits first. */
export function runCliKilled(args: string[], plan: KillPlan, env: NodeJS.ProcessEnv = {}): Promise<KilledRun> {
  return new Promise((resolve, reject) => {
    // No code cache: a killed run and the unkilled one that timed it must compile alike (a cache written by
    // the timing run would make every later run faster than the delays drawn from it).
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, IPC_CKPT_CODE_CACHE: 'off', ...env }, stdio: [plan.input ? 'pipe' : 'ignore', 'pipe', 'pipe'] });
    if (plan.input) {
      child.stdin!.on('error', () => undefined); // the CLI may end before it read everything
      child.stdin!.end(plan.input);
    }
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout!.on('data', (d: Buffer) => out.push(d));
    child.stderr!.on('data', (d: Buffer) => err.push(d));
    let killed = false;
    const running = () => child.exitCode === null && child.signalCode === null;
    const kill = () => {
      killed = running();
      if (killed) child.kill(plan.signal ?? 'SIGKILL');
    };
    let timer: NodeJS.Timeout | undefined;
    const watched = plan.afterGuardianOf;
    const when = plan.when ?? (watched ? () => processesAt(watched, ...(plan.workload ?? [])).length > 0 : undefined);
    if (when) {
      const poll = () => {
        if (!running()) return;
        if (when(child.pid!)) timer = setTimeout(kill, plan.delayMs);
        else timer = setTimeout(poll, 1);
      };
      poll();
    } else {
      timer = setTimeout(kill, plan.delayMs);
    }
    child.on('error', reject);
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      resolve({ status, exitSignal: signal, stdout: Buffer.concat(out).toString('latin1'), stdoutBytes: Buffer.concat(out), stderr: Buffer.concat(err).toString(), killed });
    });
  });
}

/** An unkilled run of `ipc-ckpt ...args` and how long its rollback guardian lived in it. */
export interface GuardianLife {
  result: KilledRun;
  /** From the moment `present()` first held (polled every millisecond) to the CLI's exit; at least 2. */
  lifeMs: number;
}

/**
 * Runs `ipc-ckpt ...args` unkilled and times its guardian (`present()`: the guardian is up). Kill tests draw
 * their delays within that life, so the kills land during the guarded work however fast this machine makes it.
 */
export async function timeGuardianLife(args: string[], present: () => boolean): Promise<GuardianLife> {
  let startedAt: number | undefined;
  const watcher = setInterval(() => {
    if (startedAt === undefined && present()) startedAt = Date.now();
  }, 1);
  const result = await runCliKilled(args, { delayMs: 10 * 60_000 });
  clearInterval(watcher);
  return { result, lifeMs: Math.max(2, Date.now() - (startedAt ?? Date.now())) };
}

/**
 * How long the guardian lives in an unkilled restore of `image` into a fresh namespace (timeGuardianLife):
 * `prepare` runs on the namespace first; `present` tells the guardian is up (any process at the namespace unless given).
 */
export async function restoreGuardianLife(image: string, options: { prepare?: (target: TestNamespace) => void; present?: (target: TestNamespace) => boolean } = {}): Promise<number> {
  const target = await TestNamespace.create();
  try {
    options.prepare?.(target);
    const present = options.present ?? ((ns: TestNamespace) => processesAt(ns).length > 0);
    const { result, lifeMs } = await timeGuardianLife(['restore', '--ns', target.path, '-i', image], () => present(target));
    expect(result.status).toBe(0);
    return lifeMs;
  } finally {
    await target.destroy();
  }
}

/** Pids (other than the namespace's holder and `others`) inside the namespace or about to enter it (nsenter, the guardian). */
export function processesAt(ns: TestNamespace, ...others: number[]): number[] {
  const inode = ns.inode;
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === ns.pid) continue;
    if (others.length > 0 && isOrDescendsFrom(Number(entry), others)) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      // The guardian program names the namespace it is about to join as its argument.
      if (readlinkSync(`/proc/${entry}/ns/ipc`) === inode || cmdline.includes(`--ipc=${ns.path}\0`) || cmdline.includes(`ipc-ckpt-guardian\0${ns.path}\0`)) {
        found.push(Number(entry));
      }
    } catch {
      // it ended meanwhile
    }
  }
  return found;
}

/** True when pid is one of ancestors or a descendant of one (a workload and its children). */
function isOrDescendsFrom(pid: number, ancestors: number[]): boolean {
  for (let current = pid, depth = 0; current > 1 && depth < 64; depth++) {
    if (ancestors.includes(current)) return true;
    try {
      current = Number(/^\d+ \(.*\) \S+ (\d+)/s.exec(readFileSync(`/proc/${current}/stat`, 'utf8'))?.[1] ?? 0);
    } catch {
      return false;
    }
  }
  return false;
}

/** Waits until no process works on the namespace any more (the guardian exits once it has rolled back); `workload` pids and their children may stay. */
export async function waitUntilAlone(ns: TestNamespace, ...workload: number[]): Promise<void> {
  const timeoutMs = 15_000;
  const deadline = Date.now() + timeoutMs;
  let quietChecks = 0;
  while (quietChecks < 3) {
    const left = processesAt(ns, ...workload);
    quietChecks = left.length === 0 ? quietChecks + 1 : 0;
    if (Date.now() > deadline) throw new Error(`processes still in ${ns.path} after ${timeoutMs} ms: ${left.join(', ')}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Everything of a namespace a checkpoint tool could leave changed: queues, messages, limits, msg_next_id. */
export interface NamespaceState extends NamespaceDump {
  msgNextId: number;
}

export function namespaceState(ns: TestNamespace): NamespaceState {
  return { ...dumpNamespace(ns.path), msgNextId: Number(msgqTool(ns.path, 'sysctl', 'msg_next_id').trim()) };
}

/** A small seeded generator (mulberry32): runs are reproducible from the seed they print. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The seed of this run: IPC_CKPT_TEST_SEED to repeat one, else the time. */
export function testSeed(): number {
  return Number(process.env.IPC_CKPT_TEST_SEED ?? Date.now() % 2 ** 31);
}
