// SIGKILL of `ipc-ckpt restore` of POSIX queues at random points: the rollback guardian unlinks the
// POSIX queues the killed restore created and puts the mqueue limits back, so the target is left as it
// was, or (killed after the restore was complete) fully restored.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { TestNamespace } from '../support/namespace';
import { runCli } from '../support/cli';
import { mqTool } from '../support/mq-tool';
import { restoreGuardianLife, runCliKilled, seededRandom, testSeed, waitUntilAlone } from './killed-run';

const KILL_RUNS = 30;
const QUEUES = 40;
/** Unkilled restores timed before the kills. */
const TIMING_RUNS = 3;

jest.setTimeout(5 * 60_000);

/** Every queue's name, mode and owner, plus the mqueue limits: what a restore may change. */
function posixState(nsPath: string): string {
  return execFileSync('nsenter', [`--ipc=${nsPath}`, 'unshare', '--mount', 'sh', '-c', 'cat /proc/sys/fs/mqueue/*; mount -t mqueue none /mnt && cd /mnt && for q in *; do [ -e "$q" ] && stat -c "%n %a %u %g" "$q" && cat "$q"; done; true'], { encoding: 'utf8' });
}

test('SIGKILL of a POSIX queue restore leaves the target as it was or fully restored', async () => {
  const source = await TestNamespace.create();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ipc-ckpt-kill-restore-posix-'));
  try {
    execFileSync('nsenter', [`--ipc=${source.path}`, 'sh', '-c', 'echo 50 > /proc/sys/fs/mqueue/msg_max; echo 9000 > /proc/sys/fs/mqueue/msgsize_max']);
    for (let q = 0; q < QUEUES; q++) {
      const name = `queue ${String(q).padStart(2, '0')}`;
      mqTool(source.path, 'create', name, 5, 1000, '640');
      mqTool(source.path, 'fill', name, q % 5, 1000);
    }
    const image = path.join(dir, 'posix.img');
    expect(runCli(['save', '--ns', source.path, '--quiescent', '-o', image]).status).toBe(0);
    // Timed as the killed runs are made (the same spawn, no code cache), the median of 3: a single timing run
    // that came out cold (272 ms in one CI run) put most kills after the restore's end.
    const timings: number[] = [];
    let complete = '';
    for (let timing = 0; timing < TIMING_RUNS; timing++) {
      const restored = await TestNamespace.create();
      try {
        const started = Date.now();
        const result = await runCliKilled(['restore', '--ns', restored.path, '-i', image], { delayMs: 10 * 60_000 });
        timings.push(Date.now() - started);
        expect(result.status).toBe(0);
        if (timing === 0) complete = posixState(restored.path);
      } finally {
        await restored.destroy();
      }
    }
    const restoreMs = timings.sort((a, b) => a - b)[Math.floor(TIMING_RUNS / 2)];
    // Kills timed from the guardian's start land within the first half of its life in an unkilled restore
    // (a fixed 30 ms window let half of them come after the end).
    const guardianWindowMs = Math.max(2, Math.floor((await restoreGuardianLife(image)) / 2));

    const seed = testSeed();
    const random = seededRandom(seed);
    const problems: string[] = [];
    const tally = { killed: 0, killedAfterGuardian: 0, leftAsItWas: 0, complete: 0 };
    for (let run = 0; run < KILL_RUNS; run++) {
      const target = await TestNamespace.create();
      try {
        const before = posixState(target.path);
        // Odd runs: within guardianWindowMs of the guardian's start (the first limit raised, just before the first mq_open).
        const afterGuardian = run % 2 === 1;
        const delayMs = Math.floor(random() * (afterGuardian ? guardianWindowMs : restoreMs * 1.1));
        const result = await runCliKilled(['restore', '--ns', target.path, '-i', image], { delayMs, afterGuardianOf: afterGuardian ? target : undefined });
        if (result.killed) tally.killed++;
        if (result.killed && afterGuardian) tally.killedAfterGuardian++;
        await waitUntilAlone(target);
        const after = posixState(target.path);
        if (after === before) tally.leftAsItWas++;
        else if (after === complete) tally.complete++;
        else problems.push(`run ${run} (kill after ${delayMs} ms): the target is neither as it was nor complete:\n${after}`);
      } finally {
        await target.destroy();
      }
    }
    console.log(`kill POSIX restore (seed ${seed}, restore ${restoreMs} ms of ${timings.join('/')}, guardian window ${guardianWindowMs} ms): ${JSON.stringify(tally)}`);
    expect(problems).toEqual([]);
    expect(tally.killed).toBeGreaterThanOrEqual(KILL_RUNS * 0.5);
    expect(tally.leftAsItWas).toBeGreaterThan(0);
    expect(tally.killedAfterGuardian).toBeGreaterThan(0);
  } finally {
    await source.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
});
