// A deep queue under a steady receiver and sender of equal-size messages: each receive+send pair
// within one second leaves the queue's stat exactly as it was (qnum, cbytes, lspid, lrpid equal;
// stime/rtime count whole seconds), so stat-before/stat-after cannot see that the messages moved
// during the MSG_COPY batch, and the tail re-check passes too (the batch read the new tail).
//
// Before save certified a copy only for a queue whose last change came before the second the copy
// began in, 15 of 25 saves here exited 0 with an image that skipped a message. Now such a queue is
// waited for (the next second) or the save fails with E_TORN: never a torn image.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { TestNamespace } from '../support/namespace';
import { msgqTool } from '../support/msgq-tool';
import { runCliAsync } from '../support/cli';
import { Hammer, HammerSpec, tornProblem } from '../support/hammer';
import { decodeImageToMemory } from '../../lib/image/decoder';

/** Saves tried; the first torn image ends the test. */
const MAX_RUNS = 20;
/** Messages held: a batch long enough (MSG_COPY walks from the head) for a receive and a send to land in it. */
const DEPTH = 1000;
const PACE_US = 10_000;

jest.setTimeout(5 * 60_000);

let ns: TestNamespace;
let dir: string;

beforeAll(async () => {
  ns = await TestNamespace.create();
  dir = mkdtempSync(path.join(os.tmpdir(), 'ipc-ckpt-torn-'));
  msgqTool(ns.path, 'sysctl', 'msgmnb', 1 << 20);
});

afterAll(async () => {
  await ns.destroy();
  rmSync(dir, { recursive: true, force: true });
});

test('a deep queue whose receiver and sender move it during the copy is never saved torn', async () => {
  const spec: HammerSpec = { kind: 'fifo', id: Number(msgqTool(ns.path, 'create', '0x4c01', '600').trim()), size: 64 };
  const hammer = await Hammer.start(ns.path, [spec], { paceUs: PACE_US, prefill: DEPTH, backlog: { low: DEPTH - 10, high: DEPTH + 10 } });
  const image = path.join(dir, 'deep.img');
  const outcomes: string[] = [];
  try {
    for (let run = 0; run < MAX_RUNS; run++) {
      const result = await runCliAsync(['save', '--ns', ns.path, '-o', image]);
      if (result.status !== 0) {
        expect(result.stderr).toMatch(/kept changing .*--freeze/s);
        outcomes.push('E_TORN');
        continue;
      }
      const { queue, messages } = (await decodeImageToMemory(readFileSync(image))).queues[0];
      const problem = tornProblem(spec, queue, messages);
      outcomes.push(problem ? `saved torn: ${problem}` : 'saved');
      if (problem) break;
    }
  } finally {
    await hammer.stop();
  }
  console.log(`deep queue under load: ${outcomes.join('; ')}`);
  expect(outcomes.filter((o) => o.startsWith('saved torn'))).toEqual([]);
});
