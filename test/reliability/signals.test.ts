// SIGINT, SIGTERM and SIGHUP at random moments of save (to a file and to stdout) and restore (from a
// file and from stdin): the run ends in order (rolled back, limits put back, its temporary image and
// stdin spool removed) with exit 128+n and one line, or it had finished (exit 0, complete). Each
// run gets its own output folder and TMPDIR, so "nothing left" is an empty directory.
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import * as os from 'node:os';
import * as path from 'node:path';
import { TestNamespace } from '../support/namespace';
import { dumpNamespace, msgqTool } from '../support/msgq-tool';
import { populateSample } from '../support/sample-namespace';
import { runCli } from '../support/cli';
import { KilledRun, namespaceState, NamespaceState, runCliKilled, seededRandom, testSeed, waitUntilAlone } from './killed-run';

/** Runs of each kind (save to a file, save to stdout, restore from a file, restore from stdin). */
const RUNS_PER_KIND = 50;
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
const LONG_QUEUE_MESSAGES = 2000;
const RESTORABLE = ['id', 'key', 'uid', 'gid', 'cuid', 'cgid', 'mode', 'qbytes', 'qnum', 'cbytes', 'messages'] as const;

jest.setTimeout(15 * 60_000);

let dir: string;
let source: TestNamespace;
let image: string;
let imageBytes: Buffer;
let fullSaveMs: number;
let fullRestoreMs: number;
/** How long the CLI takes to start and exit doing nothing (`--version`). */
let startupMs: number;

/** True once the CLI has its signal handlers (SIGHUP caught: Node itself catches only SIGTERM). */
function handlersInstalled(pid: number): boolean {
  try {
    const caught = /^SigCgt:\s*([0-9a-f]+)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return caught !== undefined && (BigInt(`0x${caught}`) & 1n) === 1n;
  } catch {
    return false;
  }
}

/** Even runs: a signal anywhere from the start (Node's startup included); odd runs: once the CLI's handlers are in place. */
function signalPlan(run: number, random: () => number, fullMs: number) {
  if (run % 2 === 0) return { delayMs: Math.floor(random() * fullMs), when: undefined };
  return { delayMs: Math.floor(random() * Math.max(1, fullMs - startupMs)), when: handlersInstalled };
}

/** The length of a whole run, following the machine's load: each run that finished moves it halfway to its own time. */
class RunLength {
  constructor(public ms: number) {}

  async time<T extends { status: number | null }>(run: Promise<T>): Promise<T> {
    const started = Date.now();
    const result = await run;
    if (result.status === 0) this.ms = Math.round((this.ms + (Date.now() - started)) / 2);
    return result;
  }
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'ipc-ckpt-signals-'));
  source = await TestNamespace.create();
  populateSample(source.path); // holds a message above msgmax: every save raises msgmax, every restore too
  msgqTool(source.path, 'sysctl', 'msgmnb', 1 << 20);
  const long = msgqTool(source.path, 'create', '0x5a5a', '600').trim();
  msgqTool(source.path, 'send-many', long, LONG_QUEUE_MESSAGES, 16, 9);
  msgqTool(source.path, 'sysctl', 'msgmnb', 20000);
  image = path.join(dir, 'q.img');
  expect(runCli(['save', '--ns', source.path, '-o', image]).status).toBe(0);
  imageBytes = readFileSync(image);
  const timed = (args: string[]) => {
    const started = Date.now();
    expect(runCli(args).status).toBe(0);
    return Date.now() - started;
  };
  fullSaveMs = timed(['save', '--ns', source.path, '-o', path.join(dir, 'timing.img')]);
  const scratch = await TestNamespace.create();
  fullRestoreMs = timed(['restore', '--ns', scratch.path, '-i', image]);
  await scratch.destroy();
  startupMs = Math.min(fullSaveMs / 2, timed(['--version']));
});

afterAll(async () => {
  await source.destroy();
  rmSync(dir, { recursive: true, force: true });
});

interface Tally {
  interrupted: number;
  completed: number;
  /**
   * The signal's default action ended the process: it came while Node was starting (before the CLI's
   * handlers) or tearing down after the run ended (Node closes its signal handlers at exit). The run
   * had then done nothing, or everything: the checks below hold the namespace and files to that.
   */
  outsideTheRun: number;
}

/** What a signalled run must have ended as; returns a problem or undefined. */
function endedInOrder(result: KilledRun, signal: (typeof SIGNALS)[number], tally: Tally): string | undefined {
  if (/\n\s+at /.test(result.stderr) || /internal error/.test(result.stderr)) return `a stack trace: ${result.stderr}`;
  if (result.status === 0) {
    tally.completed++;
    return undefined;
  }
  if (result.exitSignal === signal) {
    tally.outsideTheRun++;
    return undefined;
  }
  if (result.status !== 128 + osConstants.signals[signal]) return `exit ${result.status} (${result.exitSignal}): ${result.stderr.trim()}`;
  const lines = result.stderr.trim().split('\n').filter((line) => !line.startsWith('saved ') && !line.startsWith('restored '));
  if (lines.length !== 1 || !lines[0].startsWith(`ipc-ckpt: interrupted by ${signal}`)) return `not one line: ${JSON.stringify(result.stderr)}`;
  tally.interrupted++;
  return undefined;
}

function emptyOrOnly(folder: string, allowed: string[]): string | undefined {
  const left = readdirSync(folder).filter((name) => !allowed.includes(name));
  return left.length === 0 ? undefined : `left in ${folder}: ${left.join(', ')}`;
}

for (const output of ['file', 'stdout'] as const) {
  test(`save to ${output}: a signal at a random moment leaves the source unchanged, msgmax as before, no file behind`, async () => {
    const seed = testSeed() + (output === 'file' ? 10 : 20);
    const random = seededRandom(seed);
    const before = namespaceState(source);
    const length = new RunLength(fullSaveMs);
    const tally: Tally = { interrupted: 0, completed: 0, outsideTheRun: 0 };
    const problems: string[] = [];
    for (let run = 0; run < RUNS_PER_KIND; run++) {
      const signal = SIGNALS[run % SIGNALS.length];
      const runDir = path.join(dir, `save-${output}-${run}`);
      const tmp = path.join(runDir, 'tmp');
      const out = path.join(runDir, 'out');
      mkdirSync(tmp, { recursive: true });
      mkdirSync(out);
      const { delayMs, when } = signalPlan(run, random, length.ms);
      const args = ['save', '--ns', source.path, '-o', output === 'file' ? path.join(out, 'q.img') : '-'];
      const result = await length.time(runCliKilled(args, { delayMs, when, signal }, { TMPDIR: tmp }));
      await waitUntilAlone(source);
      const problem =
        endedInOrder(result, signal, tally) ??
        (JSON.stringify(namespaceState(source)) === JSON.stringify(before) ? undefined : 'the source changed') ??
        emptyOrOnly(out, result.status === 0 || result.exitSignal ? ['q.img'] : []) ??
        emptyOrOnly(tmp, []);
      if (problem) problems.push(`run ${run} (${signal} after ${delayMs} ms): ${problem}`);
      const complete = output === 'file' ? readdirSync(out).includes('q.img') : result.status === 0;
      if (complete) {
        const saved = output === 'file' ? path.join(out, 'q.img') : path.join(runDir, 'stdout.img');
        if (output === 'stdout') writeFileSync(saved, result.stdoutBytes);
        const verified = runCli(['verify', '--ns', source.path, '-i', saved]);
        if (verified.status !== 0) problems.push(`run ${run}: the completed image does not verify: ${verified.stdout}`);
      }
      rmSync(runDir, { recursive: true, force: true });
    }
    console.log(`signals during save to ${output} (seed ${seed}, full save ${fullSaveMs} ms then ${length.ms} ms, startup ${startupMs} ms): ${JSON.stringify(tally)}`);
    expect(problems).toEqual([]);
    expect(tally.interrupted).toBeGreaterThanOrEqual(RUNS_PER_KIND / 5);
  });
}

/** After a signalled restore: the target as it was, or as it was plus the whole image. */
function restoreOutcome(target: TestNamespace, before: NamespaceState, expected: ReturnType<typeof dumpNamespace>): 'rolled back' | 'complete' | string {
  const state = namespaceState(target);
  if (JSON.stringify(state) === JSON.stringify(before)) return 'rolled back';
  const ownIds = new Set(before.queues.map((q) => q.id));
  const added = state.queues.filter((q) => !ownIds.has(q.id));
  const restorable = (queues: typeof added) => JSON.stringify(queues.map((q) => RESTORABLE.map((f) => q[f])));
  if (restorable(added) === restorable(expected.queues) && JSON.stringify(state.limits) === JSON.stringify(expected.limits) && state.msgNextId === -1) return 'complete';
  return `neither as before nor complete: limits ${JSON.stringify(state.limits)}, queues ${state.queues.map((q) => `${q.id}:${q.qnum}`).join(' ')}`;
}

for (const input of ['file', 'stdin'] as const) {
  test(`restore from ${input}: a signal at a random moment leaves the target exactly as before or exactly restored, no spool behind`, async () => {
    const seed = testSeed() + (input === 'file' ? 30 : 40);
    const random = seededRandom(seed);
    const expected = dumpNamespace(source.path);
    const length = new RunLength(fullRestoreMs);
    const tally: Tally & { rolledBack: number } = { interrupted: 0, completed: 0, outsideTheRun: 0, rolledBack: 0 };
    const problems: string[] = [];
    for (let run = 0; run < RUNS_PER_KIND; run++) {
      const signal = SIGNALS[run % SIGNALS.length];
      const tmp = path.join(dir, `restore-${input}-${run}`);
      mkdirSync(tmp, { recursive: true });
      const target = await TestNamespace.create();
      try {
        msgqTool(target.path, 'sysctl', 'msgmax', 4000);
        const own = msgqTool(target.path, 'create', '0x7001', '640', '--id', 200).trim();
        msgqTool(target.path, 'send-many', own, 20, 100, 4);
        const before = namespaceState(target);
        const { delayMs, when } = signalPlan(run, random, length.ms);
        const args = ['restore', '--ns', target.path, '-i', input === 'file' ? image : '-'];
        const result = await length.time(runCliKilled(args, { delayMs, when, signal, input: input === 'stdin' ? imageBytes : undefined }, { TMPDIR: tmp }));
        await waitUntilAlone(target);
        const outcome = restoreOutcome(target, before, expected);
        if (outcome === 'rolled back') tally.rolledBack++;
        const problem =
          endedInOrder(result, signal, tally) ??
          (outcome === 'rolled back' || outcome === 'complete' ? undefined : outcome) ??
          (result.status === 0 && outcome !== 'complete' ? 'exit 0 but not complete' : undefined) ??
          (result.status !== 0 && result.exitSignal === null && outcome !== 'rolled back' ? `exit ${result.status} but not rolled back` : undefined) ??
          emptyOrOnly(tmp, []);
        if (problem) problems.push(`run ${run} (${signal} after ${delayMs} ms): ${problem}`);
      } finally {
        await target.destroy();
        rmSync(tmp, { recursive: true, force: true });
      }
    }
    console.log(`signals during restore from ${input} (seed ${seed}, full restore ${fullRestoreMs} ms then ${length.ms} ms, startup ${startupMs} ms): ${JSON.stringify(tally)}`);
    expect(problems).toEqual([]);
    expect(tally.interrupted).toBeGreaterThanOrEqual(RUNS_PER_KIND / 5);
  });
}
