// fast-check generators of valid images: every field across its whole range, extremes included.
import fc from 'fast-check';
import { DATALEN_MSG, DATALEN_SEG, INT32_MAX, IPC_SEQ_MAX, IPCMNI, UINT32_MAX, UNCHANGED_ID, U64_MAX, S64_MAX } from '../../../lib/image/layout';
import type { Image, ImageHeader, MessageRecord, NamespaceLimits, QueueRecord } from '../../../lib/image/model';

const u16 = fc.integer({ min: 0, max: 0xffff });
const u32 = fc.integer({ min: 0, max: UINT32_MAX });
const s32 = fc.integer({ min: -0x80000000, max: INT32_MAX });
const u64 = fc.bigInt({ min: 0n, max: U64_MAX });
/** A uid or gid the kernel can hold: every u32 but (uid_t)-1. */
const ownerId = fc.oneof(fc.constantFrom(0, UNCHANGED_ID - 1), fc.integer({ min: 0, max: UNCHANGED_ID - 1 }));
/** A kernel time64_t of a queue: never negative. */
const queueTime = fc.bigInt({ min: 0n, max: S64_MAX });
const nonNegativeS32 = fc.integer({ min: 0, max: INT32_MAX });

/** A utsname field: any text whose UTF-8 fits 64 bytes, without NUL. */
const utsField = fc
  .string({ unit: 'binary', maxLength: 64 })
  .filter((text) => !text.includes('\0') && Buffer.byteLength(text) <= 64 && Buffer.from(text).toString() === text);

export const headerArb: fc.Arbitrary<ImageHeader> = fc.record({
  kernelRelease: utsField,
  kernelVersion: utsField,
  machine: utsField,
  major: u16,
  minor: u16,
  patch: u16,
  archId: fc.constant(2),
  time: u64,
  uflags: u64,
});

export const limitsArb: fc.Arbitrary<NamespaceLimits> = fc.record({
  shmCtlmax: u64,
  shmCtlall: u64,
  shmCtlmni: s32,
  msgCtlmax: nonNegativeS32,
  msgCtlmnb: nonNegativeS32,
  msgCtlmni: fc.integer({ min: 0, max: IPCMNI }),
  semCtlMsl: s32,
  semCtlMns: s32,
  semCtlOpm: s32,
  semCtlMni: s32,
});

/** Types biased to the s32/s64 borders, where the v16 and widened records meet. */
export const messageTypeArb = fc.oneof(
  fc.constantFrom(1n, BigInt(INT32_MAX), BigInt(INT32_MAX) + 1n, 2n ** 32n, S64_MAX),
  fc.bigInt({ min: 1n, max: BigInt(INT32_MAX) }),
  fc.bigInt({ min: 1n, max: S64_MAX }),
);

/** Sizes biased to the chunk borders of DATALEN_MSG and DATALEN_SEG, up to the default msgmax and a 64 KiB one. */
export const messageSizeArb = fc.oneof(
  fc.constantFrom(0, 1, DATALEN_MSG - 1, DATALEN_MSG, DATALEN_MSG + 1, DATALEN_MSG + DATALEN_SEG, DATALEN_MSG + DATALEN_SEG + 1, 8192, 65536),
  fc.integer({ min: 0, max: 8192 }),
);

function patternedBody(size: number, seed: number): Buffer {
  const body = Buffer.allocUnsafe(size);
  let state = seed >>> 0;
  for (let index = 0; index < size; index++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    body[index] = state >>> 24;
  }
  return body;
}

export const messageArb: fc.Arbitrary<MessageRecord> = fc
  .record({ type: messageTypeArb, size: messageSizeArb, seed: fc.integer() })
  .map(({ type, size, seed }) => ({ type, body: patternedBody(size, seed) }));

const queueFieldsArb = fc.record({
  key: fc.oneof(fc.constant(0), u32),
  uid: ownerId,
  gid: ownerId,
  cuid: ownerId,
  cgid: ownerId,
  mode: fc.integer({ min: 0, max: 0o777 }),
  stime: queueTime,
  rtime: queueTime,
  ctime: queueTime,
  qbytes: u64,
  lspid: nonNegativeS32,
  lrpid: nonNegativeS32,
  messages: fc.array(messageArb, { maxLength: 4 }),
});

export function imageArb(maxQueues = 4): fc.Arbitrary<Image> {
  const idArb = fc.record({ index: fc.integer({ min: 0, max: IPCMNI - 1 }), seq: fc.oneof(fc.constant(IPC_SEQ_MAX), fc.integer({ min: 0, max: IPC_SEQ_MAX })) });
  return fc
    .record({
      header: headerArb,
      limits: limitsArb,
      // One queue a slot (index), as in the kernel; ids of different seqs interleave.
      ids: fc.uniqueArray(idArb.map(({ index, seq }) => seq * IPCMNI + index), { maxLength: maxQueues, selector: (id) => id % IPCMNI }),
      queues: fc.array(queueFieldsArb, { minLength: maxQueues, maxLength: maxQueues }),
    })
    .map(({ header, limits, ids, queues }) => {
      const seenKeys = new Set<number>();
      const sorted = [...ids].sort((a, b) => (a % IPCMNI) - (b % IPCMNI));
      return {
        header,
        limits,
        queues: sorted.map((id, index) => {
          const { messages, key, ...fields } = queues[index];
          const uniqueKey = key !== 0 && seenKeys.has(key) ? 0 : key;
          seenKeys.add(uniqueKey);
          const queue: QueueRecord = {
            ...fields,
            id,
            key: uniqueKey,
            seq: Math.floor(id / IPCMNI),
            qnum: BigInt(messages.length),
            cbytes: BigInt(messages.reduce((sum, message) => sum + message.body.length, 0)),
          };
          return { queue, messages };
        }),
      };
    });
}
