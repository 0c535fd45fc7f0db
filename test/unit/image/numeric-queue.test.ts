// The save path's numeric IPC_MSG writer (queueInto) against the bigint one (queue()), and its range check against queueProblem.
import fc from 'fast-check';
import { IpcCkptError } from '../../../lib/errors';
import { ImageEncoder } from '../../../lib/image/encoder';
import { IPC_SEQ_MAX, IPCMNI, IpcMsgLayout } from '../../../lib/image/layout';
import type { NumericQueueRecord } from '../../../lib/image/model';
import { numericQueueInRange, queueProblem, queueRecordOfNumbers } from '../../../lib/image/rules';

const u32 = fc.integer({ min: 0, max: 0xffffffff });
const safe = fc.oneof(fc.integer({ min: 0, max: 1 << 20 }), fc.maxSafeInteger(), fc.constant(Number.MAX_SAFE_INTEGER), fc.integer({ min: 0, max: 2 ** 40 }));

/** Records near and across every range edge: most are valid, some are not. */
const numericQueueArb: fc.Arbitrary<NumericQueueRecord> = fc
  .record({
    index: fc.integer({ min: 0, max: IPCMNI - 1 }),
    seq: fc.oneof(fc.integer({ min: 0, max: IPC_SEQ_MAX }), fc.constant(IPC_SEQ_MAX + 1)),
    seqSkew: fc.oneof(fc.constant(0), fc.constant(0), fc.constant(1)),
    key: u32,
    uid: fc.oneof(u32, fc.constant(0xffffffff)),
    gid: u32,
    cuid: u32,
    cgid: u32,
    mode: fc.oneof(fc.integer({ min: 0, max: 0o777 }), fc.constant(0o1000)),
    stime: safe,
    rtime: safe,
    ctime: safe,
    qnum: fc.oneof(fc.integer({ min: 0, max: 100 }), safe),
    cbytes: fc.oneof(fc.integer({ min: 0, max: 1000 }), safe),
    qbytes: safe,
    lspid: fc.oneof(fc.integer({ min: 0, max: 0x7fffffff }), fc.constant(-1)),
    lrpid: fc.integer({ min: 0, max: 0x7fffffff }),
  })
  .map(({ index, seq, seqSkew, ...fields }) => ({ ...fields, id: seq * IPCMNI + index, seq: seq + seqSkew }));

function thrown(action: () => unknown): IpcCkptError | undefined {
  try {
    action();
  } catch (error) {
    if (error instanceof IpcCkptError) return error;
    throw error;
  }
  return undefined;
}

describe('numeric queue records (the save path)', () => {
  test('numericQueueInRange agrees with queueProblem on every record', () => {
    fc.assert(
      fc.property(numericQueueArb, (queue) => {
        expect(numericQueueInRange(queue)).toBe(queueProblem(queueRecordOfNumbers(queue)) === undefined);
      }),
      { numRuns: 3000 },
    );
  });

  test('queueInto writes the bytes queue() writes, at any offset, or refuses with the same error', () => {
    const encoder = new ImageEncoder();
    fc.assert(
      fc.property(numericQueueArb, fc.integer({ min: 0, max: 64 }), (queue, at) => {
        // A dirty buffer: every byte of the record must be written, padding and nested header included.
        const out = Buffer.alloc(at + IpcMsgLayout.BYTES + 8, 0xa5);
        const bigError = thrown(() => encoder.queue(queueRecordOfNumbers(queue)));
        const numericError = thrown(() => encoder.queueInto(out, at, queue));
        expect(numericError?.message).toBe(bigError?.message);
        if (bigError === undefined) {
          expect(out.subarray(at, at + IpcMsgLayout.BYTES)).toEqual(encoder.queue(queueRecordOfNumbers(queue)));
          expect(out.subarray(at + IpcMsgLayout.BYTES).every((byte) => byte === 0xa5)).toBe(true);
        }
      }),
      { numRuns: 3000 },
    );
  });
});
