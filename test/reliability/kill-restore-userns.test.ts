// SIGKILL of `restore` into a user-namespaced IPC namespace: its limits can be written back only as the
// namespace's own root, so this is where the guardian's writes as another euid must hold.
import { readdirSync, readFileSync, readlinkSync, mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { UserNamespacedIpc } from '../support/user-namespace';
import { runCli } from '../support/cli';
import { runCliKilled, seededRandom, testSeed } from './killed-run';

const KILL_RUNS = 12;
/** The guardian starts with the restore's first change and a restore of this image ends within about 20 ms of it. */
const GUARDIAN_WINDOW_MS = 10;
const LONG_QUEUE_MESSAGES = 3000;
const RESTORABLE = ['id', 'key', 'uid', 'gid', 'cuid', 'cgid', 'mode', 'qbytes', 'qnum', 'cbytes', 'messages'] as const;

jest.setTimeout(10 * 60_000);

interface State {
  limits: unknown;
  queues: Array<Record<string, unknown>>;
  msgNextId: string;
}

/** Everything a killed restore could leave changed, as the container sees it. */
function stateOf(ns: UserNamespacedIpc): State {
  const dump = ns.dumpInside();
  return { limits: dump.limits, queues: dump.queues.map((q) => Object.fromEntries(RESTORABLE.map((f) => [f, q[f]]))), msgNextId: ns.tool(['sysctl', 'msg_next_id']).trim() };
}

/** Processes other than the holder that are in the namespace or about to enter it (the guardian). */
function othersAt(ns: UserNamespacedIpc): number[] {
  const inode = readlinkSync(ns.path);
  return readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry) && Number(entry) !== ns.pid)
    .filter((entry) => {
      try {
        const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
        // The guardian program names the namespace it is about to join as its argument.
        return readlinkSync(`/proc/${entry}/ns/ipc`) === inode || cmdline.includes(`--ipc=${ns.path}\0`) || cmdline.includes(`ipc-ckpt-guardian\0${ns.path}\0`);
      } catch {
        return false;
      }
    })
    .map(Number);
}

async function waitUntilAlone(ns: UserNamespacedIpc): Promise<void> {
  const deadline = Date.now() + 15_000;
  for (let quiet = 0; quiet < 3; ) {
    quiet = othersAt(ns).length === 0 ? quiet + 1 : 0;
    if (Date.now() > deadline) throw new Error(`processes still in ${ns.path}: ${othersAt(ns).join(', ')}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

test('after SIGKILL of a restore into a user-namespaced target, the guardian puts its limits back as its root and removes the queues', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ipc-ckpt-kill-userns-'));
  const source = await UserNamespacedIpc.create('0 100000 65536');
  try {
    source.tool(['sysctl', 'msgmnb', 1 << 20]);
    source.tool(['sysctl', 'msgmax', 20000]);
    const app = source.tool(['create', '0x6001', '600'], { uid: 1000, gid: 1000 }).trim();
    source.tool(['send', app, 3, 15000, 1]);
    const long = source.tool(['create', '0x6002', '640']).trim();
    source.tool(['send-many', long, LONG_QUEUE_MESSAGES, 16, 9]);
    source.tool(['sysctl', 'msgmax', 9000]);
    const image = path.join(dir, 'q.img');
    expect(runCli(['save', '-t', String(source.pid), '-o', image, '-q']).status).toBe(0);
    const expected = stateOf(source);

    const seed = testSeed();
    const random = seededRandom(seed);
    const tally = { killed: 0, rolledBack: 0, rolledBackByGuardian: 0, complete: 0 };
    const problems: string[] = [];
    for (let run = 0; run < KILL_RUNS; run++) {
      const target = await UserNamespacedIpc.create('0 200000 65536');
      try {
        target.tool(['sysctl', 'msgmnb', 30000]);
        target.tool(['sysctl', 'msgmax', 4000]);
        target.tool(['create', '0x7001', '640', '--id', 200]);
        const before = stateOf(target);
        const afterGuardian = run % 2 === 1;
        const delayMs = Math.floor(random() * (afterGuardian ? GUARDIAN_WINDOW_MS : 400));
        const result = await runCliKilled(['restore', '-t', String(target.pid), '-i', image], { delayMs, when: afterGuardian ? () => othersAt(target).length > 0 : undefined });
        if (result.killed) tally.killed++;
        await waitUntilAlone(target);
        const after = stateOf(target);
        if (JSON.stringify(after) === JSON.stringify(before)) {
          tally.rolledBack++;
          if (afterGuardian && result.killed) tally.rolledBackByGuardian++;
        } else if (JSON.stringify(after.limits) === JSON.stringify(expected.limits) && JSON.stringify(after.queues.filter((q) => q.id !== 200)) === JSON.stringify(expected.queues)) {
          tally.complete++;
        } else {
          problems.push(`run ${run} (kill ${delayMs} ms after ${afterGuardian ? 'the guardian started' : 'the start'}): limits ${JSON.stringify(after.limits)} (before ${JSON.stringify(before.limits)}), queues ${after.queues.map((q) => `${String(q.id)}:${String(q.qnum)}`).join(' ')}`);
        }
      } finally {
        await target.destroy();
      }
    }
    console.log(`kill restore into a user-namespaced target (seed ${seed}): ${JSON.stringify(tally)}`);
    expect(problems).toEqual([]);
    expect(tally.rolledBackByGuardian).toBeGreaterThan(0);
  } finally {
    await source.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
});
