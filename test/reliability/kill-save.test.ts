// SIGKILL of `ipc-ckpt save` at random points: the namespace is left exactly as it was (msgmax
// included: the rollback guardian puts a raised msgmax back), and the output path holds either the
// previous image, untouched, or a new complete one.
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { TestNamespace } from '../support/namespace';
import { msgqTool } from '../support/msgq-tool';
import { populateSample, SAMPLE_LIMITS } from '../support/sample-namespace';
import { runCli } from '../support/cli';
import { namespaceState, NamespaceState, runCliKilled, seededRandom, testSeed, waitUntilAlone } from './killed-run';

const KILL_RUNS = 50;
/** Messages in an extra queue copied while msgmax is raised, so kills land in that window too. */
const LONG_QUEUE_MESSAGES = 3000;
/** Kills timed from the guardian's start land within this many milliseconds of it. */
const GUARDIAN_WINDOW_MS = 40;

jest.setTimeout(10 * 60_000);

let source: TestNamespace;
let dir: string;
let before: NamespaceState;
let previousImage: string;

beforeAll(async () => {
  source = await TestNamespace.create();
  dir = mkdtempSync(path.join(os.tmpdir(), 'ipc-ckpt-kill-save-'));
  populateSample(source.path);
  msgqTool(source.path, 'sysctl', 'msgmnb', 1 << 20);
  const long = msgqTool(source.path, 'create', '0x5a5a', '600').trim();
  msgqTool(source.path, 'send-many', long, LONG_QUEUE_MESSAGES, 16, 9);
  msgqTool(source.path, 'sysctl', 'msgmnb', SAMPLE_LIMITS.msgmnb);
  before = namespaceState(source);
  // The previous image: a complete image of another namespace, kept aside to compare with.
  const other = await TestNamespace.create();
  try {
    msgqTool(other.path, 'create', '0x1234', '600');
    previousImage = path.join(dir, 'previous.img.keep');
    expect(runCli(['save', '--ns', other.path, '-o', previousImage]).status).toBe(0);
  } finally {
    await other.destroy();
  }
});

afterAll(async () => {
  await source.destroy();
  rmSync(dir, { recursive: true, force: true });
});

test('SIGKILL of save at random points leaves the namespace as it was and the output whole', async () => {
  const seed = testSeed();
  const random = seededRandom(seed);
  const output = path.join(dir, 'q.img');
  const previous = readFileSync(previousImage);

  // One whole save first: how long a save takes sets the range of kill times.
  const started = Date.now();
  const full = runCli(['save', '--ns', source.path, '-o', path.join(dir, 'full.img')]);
  const fullMs = Date.now() - started;
  expect(full.stderr).toMatch(/msgmax raised for the copy and put back/);
  expect(full.status).toBe(0);
  rmSync(path.join(dir, 'full.img'));

  const problems: string[] = [];
  const tally = { killed: 0, finishedFirst: 0, killedAfterGuardianStarted: 0, keptPrevious: 0, replaced: 0, temporariesLeft: 0 };
  for (let run = 0; run < KILL_RUNS; run++) {
    copyFileSync(previousImage, output);
    // Even runs: a kill anywhere in the save; odd runs: within GUARDIAN_WINDOW_MS of msgmax being raised.
    const afterGuardian = run % 2 === 1;
    const delayMs = Math.floor(random() * (afterGuardian ? GUARDIAN_WINDOW_MS : fullMs * 1.2));
    const result = await runCliKilled(['save', '--ns', source.path, '-o', output], { delayMs, afterGuardianOf: afterGuardian ? source : undefined });
    if (result.killed) tally.killed++;
    else tally.finishedFirst++;
    if (afterGuardian && result.killed) tally.killedAfterGuardianStarted++;
    await waitUntilAlone(source);

    const state = namespaceState(source);
    if (JSON.stringify(state) !== JSON.stringify(before)) {
      problems.push(`run ${run} (kill ${delayMs} ms after ${afterGuardian ? 'the guardian started' : 'the start'}): the namespace changed: limits ${JSON.stringify(state.limits)}, msg_next_id ${state.msgNextId}, ${state.queues.length} queues`);
    }
    const now = readFileSync(output);
    if (now.equals(previous)) tally.keptPrevious++;
    else {
      tally.replaced++;
      const inspected = runCli(['inspect', output]);
      if (inspected.status !== 0) problems.push(`run ${run} (kill ${delayMs} ms after ${afterGuardian ? 'the guardian started' : 'the start'}): the output is neither the previous image nor a valid one: ${inspected.stderr.trim()}`);
      const verified = runCli(['verify', '--ns', source.path, '-i', output]);
      if (verified.status !== 0) problems.push(`run ${run}: the new image is not the namespace: ${verified.stdout.trim()}`);
    }
    // The hidden temporary is registered with the guardian before it is created: it removes it after the kill.
    for (const name of readdirSync(dir)) {
      if (name === 'q.img' || name === 'previous.img.keep') continue;
      if (/^\.q\.img\.ipc-ckpt-\d+-[0-9a-f]{8}\.tmp$/.test(name)) tally.temporariesLeft++;
      problems.push(`run ${run}: left behind: ${name}`);
      rmSync(path.join(dir, name));
    }
  }
  console.log(`kill save (seed ${seed}, full save ${fullMs} ms): ${JSON.stringify(tally)}`);
  expect(problems).toEqual([]);
  expect(tally.killed).toBeGreaterThanOrEqual(KILL_RUNS * 0.6);
  expect(tally.killedAfterGuardianStarted).toBeGreaterThan(0);
});
