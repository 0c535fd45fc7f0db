// Saves while senders and receivers hammer the queues: a save exits 0 with a whole image or 1 with
// E_TORN's advice, in bounded time; each image is checked queue by queue against the states the queue
// really had (torn saves are counted: see torn-detection.test.ts); --freeze always works and thaws.
import { mkdtempSync, readFileSync, existsSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { TestNamespace } from '../support/namespace';
import { dumpNamespace, msgqTool, DumpedQueue } from '../support/msgq-tool';
import { runCliAsync } from '../support/cli';
import { Hammer, HammerSpec, FreezerCgroup, tornProblem } from '../support/hammer';
import { decodeImageToMemory } from '../../lib/image/decoder';
import { runCliKilled, seededRandom, testSeed, waitUntilAlone } from './killed-run';
import type { Image } from '../../lib/image/model';

/** Runs without --freeze; the issue asks for at least 100. */
const LOAD_RUNS = 100;
/** Runs with --freeze -t HAMMERPID. */
const FREEZE_RUNS = 30;
/** SIGKILLs of `save --freeze`, each within this many milliseconds of the guardian's start. */
const FREEZE_KILL_RUNS = 15;
const FREEZE_KILL_WINDOW_MS = 30;
/** Hammer paces (microseconds between calls of each process), cycled over the runs: from a queue that changes every copy to a calm one. */
const PACES_US = [300, 1000, 3000, 10000];
/** A save under load must end within this (5 attempts per queue, each a few milliseconds). */
const SAVE_BOUND_MS = 30_000;

jest.setTimeout(15 * 60_000);

let ns: TestNamespace;
let dir: string;
let specs: HammerSpec[] = [];
/** Queues nothing touches: saved exactly as they were. */
let quiet: DumpedQueue[];

/** Hammered queues, made afresh for each hammer (a hammer numbers its messages from 0). */
function createHammeredQueues(): HammerSpec[] {
  const create = (key: number) => Number(msgqTool(ns.path, 'create', `0x${key.toString(16)}`, '600').trim());
  // Fixed sizes matter: a receive plus a send of the same size leave cbytes and qnum as they were.
  return [
    { kind: 'fifo', id: create(0x4a01), size: 64 },
    { kind: 'fifo', id: create(0x4a02), size: 0 },
    { kind: 'typed', id: create(0x4a03), size: 64 },
    { kind: 'typed', id: create(0x4a04), size: 0 },
  ];
}

function removeHammeredQueues(): void {
  for (const spec of specs) msgqTool(ns.path, 'rm', spec.id);
  specs = [];
}

beforeAll(async () => {
  ns = await TestNamespace.create();
  dir = mkdtempSync(path.join(os.tmpdir(), 'ipc-ckpt-load-'));
  msgqTool(ns.path, 'sysctl', 'msgmnb', 1 << 20);
  const calm = Number(msgqTool(ns.path, 'create', '0x4b01', '600').trim());
  msgqTool(ns.path, 'send-many', calm, 300, 100, 7);
  msgqTool(ns.path, 'create', '0x4b02', '600');
  quiet = dumpNamespace(ns.path).queues;
});

afterAll(async () => {
  await ns.destroy();
  rmSync(dir, { recursive: true, force: true });
});

/** What is wrong with an image: hammered queues in a state they never had (torn), and anything else. */
function imageProblems(image: Image): { torn: string[]; other: string[] } {
  const torn: string[] = [];
  const other: string[] = [];
  const ids = image.queues.map((q) => q.queue.id).sort((a, b) => a - b);
  const expectedIds = [...specs.map((s) => s.id), ...quiet.map((q) => q.id)].sort((a, b) => a - b);
  if (ids.join() !== expectedIds.join()) other.push(`queues ${ids} instead of ${expectedIds}`);
  for (const { queue, messages } of image.queues) {
    const spec = specs.find((s) => s.id === queue.id);
    if (spec) {
      const problem = tornProblem(spec, queue, messages);
      if (problem) torn.push(`${spec.kind} queue ${queue.id} (size ${spec.size}): ${problem}`);
      continue;
    }
    const live = quiet.find((q) => q.id === queue.id);
    const saved = messages.map((m) => ({ type: m.type.toString(), size: m.body.length, hex: m.body.toString('hex') }));
    if (!live || JSON.stringify(saved) !== JSON.stringify(live.messages) || Number(queue.ctime) !== live.ctime || Number(queue.qnum) !== live.qnum) {
      other.push(`quiet queue ${queue.id} differs from its state before the load`);
    }
  }
  return { torn, other };
}

interface RunTally {
  saved: number;
  torn: number;
  recopies: number[];
  seconds: number[];
  problems: string[];
  /** Saves that exited 0 with a queue in a state it never had (the known gap of lib/save.ts, see torn-detection.test.ts). */
  tornSaved: string[];
}

/** One save under load: exit 0 with a consistent image, or exit 1 with E_TORN's advice and no file. */
async function saveOnce(args: string[], image: string, tally: RunTally): Promise<void> {
  rmSync(image, { force: true });
  const started = Date.now();
  const result = await runCliAsync(['save', ...args, '-o', image]);
  const elapsed = Date.now() - started;
  tally.seconds.push(elapsed / 1000);
  if (elapsed > SAVE_BOUND_MS) tally.problems.push(`a save took ${elapsed} ms`);
  if (result.status === 0) {
    tally.saved++;
    tally.recopies.push(Number(/(\d+) re-copied after changes/.exec(result.stderr)?.[1] ?? 0));
    const run = tally.saved + tally.torn;
    try {
      const { torn, other } = imageProblems(await decodeImageToMemory(readFileSync(image)));
      tally.problems.push(...other.map((p) => `image ${run}: ${p}`));
      tally.tornSaved.push(...torn.map((p) => `image ${run}: ${p}`));
    } catch (error) {
      tally.problems.push(`image ${run} does not decode: ${(error as Error).message}`);
    }
  } else if (result.status === 1 && /kept changing .*--freeze/s.test(result.stderr)) {
    tally.torn++;
    if (existsSync(image)) tally.problems.push('a torn save left a file');
  } else {
    tally.problems.push(`save exited ${result.status}: ${result.stderr.trim()}`);
  }
}

function describeTally(what: string, tally: RunTally): string {
  const runs = tally.saved + tally.torn;
  const sorted = [...tally.seconds].sort((a, b) => a - b);
  return `${what}: ${runs} runs, ${tally.saved} saved (${((100 * tally.saved) / runs).toFixed(0)}%, ${tally.tornSaved.length} of them torn), ${tally.torn} E_TORN; re-copies per save max ${Math.max(0, ...tally.recopies)}; save seconds median ${sorted[sorted.length >> 1]?.toFixed(2)}, max ${sorted[sorted.length - 1]?.toFixed(2)}`;
}

test('under senders and receivers, a save ends in bounded time with exit 0 and a whole image, or exit 1 with E_TORN and its advice', async () => {
  const tally: RunTally = { saved: 0, torn: 0, recopies: [], seconds: [], problems: [], tornSaved: [] };
  const perPace = Math.ceil(LOAD_RUNS / PACES_US.length);
  for (const paceUs of PACES_US) {
    specs = createHammeredQueues();
    const hammer = await Hammer.start(ns.path, specs, { paceUs });
    try {
      for (let run = 0; run < perPace; run++) await saveOnce(['--ns', ns.path], path.join(dir, 'load.img'), tally);
    } finally {
      await hammer.stop();
      removeHammeredQueues();
    }
  }
  console.log(`${describeTally('load without --freeze', tally)}${tally.tornSaved.map((t) => `\n  torn: ${t}`).join('')}`);
  expect(tally.problems).toEqual([]);
  expect(tally.tornSaved).toEqual([]);
  expect(tally.saved + tally.torn).toBeGreaterThanOrEqual(LOAD_RUNS);
});

test('save --freeze -t HAMMERPID always saves a consistent image under the fastest hammer, and thaws the cgroup', async () => {
  const cgroup = FreezerCgroup.create(`ipc-ckpt-reliability-${process.pid}`);
  const tally: RunTally = { saved: 0, torn: 0, recopies: [], seconds: [], problems: [], tornSaved: [] };
  specs = createHammeredQueues();
  try {
    const hammer = await Hammer.start(ns.path, specs, { paceUs: PACES_US[0], cgroup: cgroup.directory });
    try {
      // The target is the hammer's own IPC namespace, found through its pid.
      expect(readFileSync(`/proc/${hammer.pid}/cgroup`, 'utf8')).toContain(`freezer:/${path.basename(cgroup.directory)}`);
      for (let run = 0; run < FREEZE_RUNS; run++) {
        await saveOnce(['--freeze', '-t', String(hammer.pid)], path.join(dir, 'frozen.img'), tally);
        if (cgroup.state !== 'THAWED') tally.problems.push(`run ${run}: the cgroup is ${cgroup.state} after the save`);
        if (!hammer.running) tally.problems.push(`run ${run}: the hammer died`);
      }
    } finally {
      await hammer.stop();
    }
  } finally {
    await cgroup.remove();
    removeHammeredQueues();
  }
  console.log(describeTally('load with --freeze', tally));
  expect(tally.problems).toEqual([]);
  expect(tally.tornSaved).toEqual([]);
  expect(tally.saved).toBe(FREEZE_RUNS);
  expect(tally.recopies.every((n) => n === 0)).toBe(true);
});

test('SIGKILL of save --freeze: the guardian thaws the cgroup, and the workload goes on', async () => {
  const cgroup = FreezerCgroup.create(`ipc-ckpt-reliability-kill-${process.pid}`);
  specs = createHammeredQueues();
  const random = seededRandom(testSeed());
  const tally = { killed: 0, thawed: 0 };
  try {
    const hammer = await Hammer.start(ns.path, specs, { paceUs: PACES_US[0], cgroup: cgroup.directory });
    try {
      for (let run = 0; run < FREEZE_KILL_RUNS; run++) {
        // Killed within FREEZE_KILL_WINDOW_MS of the cgroup reaching FROZEN: mostly while the save copies.
        const delayMs = Math.floor(random() * FREEZE_KILL_WINDOW_MS);
        const result = await runCliKilled(['save', '--freeze', '-t', String(hammer.pid), '-o', path.join(dir, 'killed.img')], { delayMs, when: () => cgroup.state === 'FROZEN' });
        if (result.killed) tally.killed++;
        await waitUntilAlone(ns, hammer.pid);
        if (cgroup.state === 'THAWED') tally.thawed++;
        expect(hammer.running).toBe(true);
      }
    } finally {
      await hammer.stop();
    }
  } finally {
    await cgroup.remove();
    removeHammeredQueues();
  }
  console.log(`kill save --freeze: ${JSON.stringify(tally)}`);
  expect(tally.thawed).toBe(FREEZE_KILL_RUNS);
  expect(tally.killed).toBeGreaterThan(FREEZE_KILL_RUNS / 2);
});
