// SIGKILL of `ipc-ckpt save` of a POSIX queue at random moments: mq_receive is destructive, yet the
// queue always ends with all of its messages in the original order (the copy child finishes the put-back).
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { TestNamespace } from '../support/namespace';
import { runCli } from '../support/cli';
import { mqTool, queueAttr } from '../support/mq-tool';
import { runCliKilled, seededRandom, testSeed, waitUntilAlone } from './killed-run';

const KILL_RUNS = 100;
/** One short of full (a full queue is refused): 2000 slots of 128 bytes fit root's RLIMIT_MSGQUEUE here. */
const MAXMSG = 2000;
const MESSAGES = MAXMSG - 1;
const SIZE = 100;

jest.setTimeout(5 * 60_000);

/** True while a copy child (native/posix_queue_calls.cc names it) works in the namespace. */
function copyChildAt(ns: TestNamespace): boolean {
  const inode = ns.inode;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/comm`, 'utf8').trim() === 'ipc-ckpt-mqcopy' && readlinkSync(`/proc/${entry}/ns/ipc`) === inode) return true;
    } catch {
      // it ended meanwhile
    }
  }
  return false;
}

test('SIGKILL of a POSIX queue save at 100 random moments never loses or reorders a message', async () => {
  const source = await TestNamespace.create();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ipc-ckpt-kill-posix-'));
  try {
    execFileSync('nsenter', [`--ipc=${source.path}`, 'sh', '-c', `echo ${MAXMSG} > /proc/sys/fs/mqueue/msg_max`]);
    mqTool(source.path, 'create', 'work', MAXMSG, 128, '600');
    // The reference: the digest (count, FNV-1a over priority, size and body in delivery order) of an untouched fill.
    mqTool(source.path, 'fill', 'work', MESSAGES, SIZE);
    const reference = mqTool(source.path, 'receive-digest', 'work').trim();
    expect(reference.startsWith(`${MESSAGES} `)).toBe(true);

    const seed = testSeed();
    const random = seededRandom(seed);
    const output = path.join(dir, 'q.img');
    mqTool(source.path, 'fill', 'work', MESSAGES, SIZE);
    const started = Date.now();
    expect(runCli(['save', '--ns', source.path, '--quiescent', '-o', output]).status).toBe(0);
    const fullMs = Date.now() - started;
    expect(mqTool(source.path, 'receive-digest', 'work').trim()).toBe(reference);

    const problems: string[] = [];
    const tally = { killed: 0, finishedFirst: 0, killedDuringCopy: 0 };
    for (let run = 0; run < KILL_RUNS; run++) {
      mqTool(source.path, 'fill', 'work', MESSAGES, SIZE);
      // Even runs: anywhere in the save; odd runs: within 3 ms of the copy child's start (messages out of the queue).
      const duringCopy = run % 2 === 1;
      const delayMs = duringCopy ? Math.floor(random() * 3) : Math.floor(random() * fullMs * 1.2);
      const result = await runCliKilled(['save', '--ns', source.path, '--quiescent', '-o', output], { delayMs, when: duringCopy ? () => copyChildAt(source) : undefined });
      if (result.killed) tally.killed++;
      else tally.finishedFirst++;
      if (duringCopy && result.killed) tally.killedDuringCopy++;
      await waitUntilAlone(source);
      const attr = queueAttr(source.path, 'work');
      const digest = mqTool(source.path, 'receive-digest', 'work').trim();
      if (attr.curmsgs !== MESSAGES || digest !== reference) problems.push(`run ${run} (kill ${delayMs} ms after ${duringCopy ? 'the copy began' : 'the start'}): ${attr.curmsgs} messages, digest ${digest}, expected ${reference}`);
    }
    console.log(`kill POSIX save (seed ${seed}, full save ${fullMs} ms): ${JSON.stringify(tally)}`);
    expect(problems).toEqual([]);
    expect(tally.killed).toBeGreaterThanOrEqual(KILL_RUNS * 0.5);
    expect(tally.killedDuringCopy).toBeGreaterThan(0);
  } finally {
    await source.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
});
