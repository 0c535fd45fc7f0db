// Runs at once on one namespace: the namespace lock serializes what changes or depends on its limits.
// Saves that raise msgmax record the true msgmax and leave it as it was; two restores into one
// target either both succeed (different queues) or exactly one does (the same image); verify
// changes nothing; a run that must wait says who holds the lock.
import { spawn, ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { TestNamespace } from '../support/namespace';
import { msgqTool } from '../support/msgq-tool';
import { populateSample, SAMPLE_LIMITS } from '../support/sample-namespace';
import { runCli, runCliAsync } from '../support/cli';
import { namespaceState } from './killed-run';

const SAVE_ROUNDS = 30;
const SAVE_NEXT_TO_RESTORE_ROUNDS = 15;
const RESTORE_ROUNDS = 10;
const VERIFY_ROUNDS = 20;

jest.setTimeout(10 * 60_000);

let dir: string;
let source: TestNamespace;
let sampleImage: string;

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'ipc-ckpt-concurrency-'));
  source = await TestNamespace.create();
  populateSample(source.path);
  sampleImage = path.join(dir, 'sample.img');
  expect(runCli(['save', '--ns', source.path, '-o', sampleImage]).status).toBe(0);
});

afterAll(async () => {
  await source.destroy();
  rmSync(dir, { recursive: true, force: true });
});

function recordedLimits(image: string): { msgmax: number; msgmnb: number; msgmni: number } {
  const result = runCli(['inspect', image, '--json']);
  expect(result.status).toBe(0);
  const limits = (JSON.parse(result.stdout) as { limits: { msgCtlmax: number; msgCtlmnb: number; msgCtlmni: number } }).limits;
  return { msgmax: limits.msgCtlmax, msgmnb: limits.msgCtlmnb, msgmni: limits.msgCtlmni };
}

function liveMsgmax(ns: TestNamespace): number {
  return Number(msgqTool(ns.path, 'sysctl', 'msgmax').trim());
}

test('two saves at once that both raise msgmax: both succeed, both images record the true msgmax, msgmax is back after each round', async () => {
  const problems: string[] = [];
  for (let round = 0; round < SAVE_ROUNDS; round++) {
    const images = [path.join(dir, `a${round}.img`), path.join(dir, `b${round}.img`)];
    const results = await Promise.all(images.map((image) => runCliAsync(['save', '--ns', source.path, '-o', image])));
    results.forEach((result, i) => {
      if (result.status !== 0) problems.push(`round ${round} save ${i}: exit ${result.status}: ${result.stderr.trim()}`);
      else if (recordedLimits(images[i]).msgmax !== SAMPLE_LIMITS.msgmax) problems.push(`round ${round} save ${i} recorded msgmax ${recordedLimits(images[i]).msgmax}`);
    });
    const after = liveMsgmax(source);
    if (after !== SAMPLE_LIMITS.msgmax) problems.push(`round ${round}: msgmax is ${after} after the saves`);
    for (const image of images) rmSync(image, { force: true });
  }
  expect(problems).toEqual([]);
});

test('a save next to a restore --keep-limits (which raises msgmax for its big message): both succeed, the image records the true msgmax, msgmax is back', async () => {
  const problems: string[] = [];
  for (let round = 0; round < SAVE_NEXT_TO_RESTORE_ROUNDS; round++) {
    const target = await TestNamespace.create();
    try {
      msgqTool(target.path, 'sysctl', 'msgmax', 8192);
      msgqTool(target.path, 'sysctl', 'msgmnb', 16384);
      const own = msgqTool(target.path, 'create', '0x7777', '600', '--id', 77).trim();
      msgqTool(target.path, 'send', own, 1, 8000);
      const image = path.join(dir, `t${round}.img`);
      const [saved, restored] = await Promise.all([
        runCliAsync(['save', '--ns', target.path, '-o', image]),
        runCliAsync(['restore', '--keep-limits', '--ns', target.path, '-i', sampleImage]),
      ]);
      if (saved.status !== 0) problems.push(`round ${round} save: ${saved.stderr.trim()}`);
      else if (recordedLimits(image).msgmax !== 8192) problems.push(`round ${round}: the save recorded msgmax ${recordedLimits(image).msgmax}`);
      if (restored.status !== 0) problems.push(`round ${round} restore: ${restored.stderr.trim()}`);
      const after = liveMsgmax(target);
      if (after !== 8192) problems.push(`round ${round}: msgmax is ${after} afterwards`);
      if (runCli(['verify', '--ignore-limits', '--ignore-other-queues', '--ns', target.path, '-i', sampleImage]).status !== 0) problems.push(`round ${round}: the restore does not verify`);
      rmSync(image, { force: true });
    } finally {
      await target.destroy();
    }
  }
  expect(problems).toEqual([]);
});

test('two restores of non-conflicting images into one target at once both succeed exactly; the same image twice: exactly one succeeds, the other fails with E_CONFLICT', async () => {
  // A second image with other ids and keys than the sample's.
  const other = await TestNamespace.create();
  const otherImage = path.join(dir, 'other.img');
  try {
    for (let i = 0; i < 5; i++) {
      const id = msgqTool(other.path, 'create', `0x${(0x2000 + i).toString(16)}`, '640', '--id', 2 * 32768 + 40 + i).trim();
      msgqTool(other.path, 'send-many', id, 50, 32, 3);
    }
    msgqTool(other.path, 'sysctl', 'msgmax', 60000);
    expect(runCli(['save', '--ns', other.path, '-o', otherImage]).status).toBe(0);
  } finally {
    await other.destroy();
  }
  const problems: string[] = [];
  for (let round = 0; round < RESTORE_ROUNDS; round++) {
    const target = await TestNamespace.create();
    try {
      const both = await Promise.all([sampleImage, otherImage].map((image) => runCliAsync(['restore', '--keep-limits', '--ns', target.path, '-i', image])));
      both.forEach((r, i) => r.status !== 0 && problems.push(`round ${round}: restore ${i} failed: ${r.stderr.trim()}`));
      for (const image of [sampleImage, otherImage]) {
        const verified = runCli(['verify', '--ignore-limits', '--ignore-other-queues', '--ns', target.path, '-i', image]);
        if (verified.status !== 0) problems.push(`round ${round}: ${path.basename(image)} does not verify: ${verified.stdout.trim()}`);
      }
    } finally {
      await target.destroy();
    }
    const twice = await TestNamespace.create();
    try {
      const before = namespaceState(twice);
      const runs = await Promise.all([0, 1].map(() => runCliAsync(['restore', '--ns', twice.path, '-i', sampleImage])));
      const ok = runs.filter((r) => r.status === 0);
      const conflicts = runs.filter((r) => r.status === 1 && /cannot restore into .*nothing was changed/.test(r.stderr) && /slot \d+ is taken/.test(r.stderr));
      if (ok.length !== 1 || conflicts.length !== 1) problems.push(`round ${round}: the same image twice: ${runs.map((r) => `${r.status} ${r.stderr.trim()}`).join(' | ')}`);
      if (runCli(['verify', '--ns', twice.path, '-i', sampleImage]).status !== 0) problems.push(`round ${round}: the one restore does not verify`);
      expect(before.queues).toEqual([]);
    } finally {
      await twice.destroy();
    }
  }
  expect(problems).toEqual([]);
});

test('two verifies at once of a namespace holding a message above msgmax: both equal, msgmax as before', async () => {
  const problems: string[] = [];
  for (let round = 0; round < VERIFY_ROUNDS; round++) {
    const results = await Promise.all([0, 1].map(() => runCliAsync(['verify', '--ns', source.path, '-i', sampleImage])));
    results.forEach((r, i) => r.status !== 0 && problems.push(`round ${round} verify ${i}: ${r.stdout.trim()} ${r.stderr.trim()}`));
    const after = liveMsgmax(source);
    if (after !== SAMPLE_LIMITS.msgmax) problems.push(`round ${round}: msgmax is ${after} after the verifies`);
  }
  expect(problems).toEqual([]);
});

/** The lock file of a namespace, as ipc-ckpt names it. */
function lockFileOf(ns: TestNamespace): string {
  const { dev, ino } = statSync(ns.path, { bigint: true });
  return path.join(process.env.IPC_CKPT_LOCK_DIR ?? '/run/ipc-ckpt', `ipc-ns-${dev}-${ino}.lock`);
}

/** Holds the namespace's lock with util-linux flock(1) until killed; resolves once it is held. */
async function holdLock(ns: TestNamespace): Promise<ChildProcess> {
  const file = lockFileOf(ns);
  const holder = spawn('flock', ['--exclusive', '--close', file, 'sh', '-c', 'echo held; exec sleep 60'], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve) => holder.stdout!.once('data', () => resolve()));
  return holder;
}

test('a run that must wait says who holds the lock; --no-wait and --wait fail with E_LOCKED; a dead holder\'s lock is taken over', async () => {
  const target = await TestNamespace.create();
  try {
    runCli(['restore', '--dry-run', '--ns', target.path, '-i', sampleImage]); // makes the lock file
    const holder = await holdLock(target);
    try {
      const noWait = runCli(['restore', '--no-wait', '--ns', target.path, '-i', sampleImage]);
      expect(noWait.status).toBe(1);
      expect(noWait.stderr).toMatch(new RegExp(`another ipc-ckpt run holds the lock of ${target.path} \\(pid \\d+`));
      const shortWait = runCli(['save', '--wait', '0.3', '--ns', target.path, '-o', path.join(dir, 'never.img')]);
      expect(shortWait.status).toBe(1);
      expect(shortWait.stderr).toMatch(/after 0\.3 s of waiting/);
      expect(namespaceState(target).queues).toEqual([]);
      // Waits as long as it takes; the holder is SIGKILLed meanwhile and its lock goes with it.
      const waiting = runCliAsync(['restore', '--ns', target.path, '-i', sampleImage]);
      await new Promise((resolve) => setTimeout(resolve, 500));
      holder.kill('SIGKILL');
      const restored = await waiting;
      expect(restored.stderr).toMatch(/ipc-ckpt: waiting for the lock of .*, held by pid \d+/);
      expect(restored.status).toBe(0);
      expect(runCli(['verify', '--ns', target.path, '-i', sampleImage]).status).toBe(0);
    } finally {
      holder.kill('SIGKILL');
    }
  } finally {
    await target.destroy();
  }
});
