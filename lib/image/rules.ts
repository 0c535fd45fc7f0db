// The rules a record's fields must meet, shared by the encoder (refuse to write) and the decoder (refuse to read).
// Each check returns the problem as a phrase, or undefined when the value is acceptable.
import type { IdExtent, ImageHeader, ImageIdMapping, NamespaceLimits, NumericQueueRecord, QueueRecord } from './model';
import {
  ARCH_X86_64,
  ID_MAPPING_MAX_EXTENTS,
  INT32_MAX,
  IPC_SEQ_MAX,
  IPCMNI,
  IPCMNI_SHIFT,
  MODE_BITS,
  S32_MIN,
  S64_MAX,
  UNCHANGED_ID,
  U64_MAX,
  UINT32_MAX,
  UTS_FIELD_BYTES,
} from './layout';

/** Counting stays exact in JS numbers up to here; a queue claiming more messages or bytes is refused. */
export const MAX_QUEUE_COUNTER = BigInt(Number.MAX_SAFE_INTEGER);

function isIntegerIn(value: number, min: number, max: number): boolean {
  return Number.isInteger(value) && value >= min && value <= max;
}

function isBigIn(value: bigint, min: bigint, max: bigint): boolean {
  return typeof value === 'bigint' && value >= min && value <= max;
}

function firstProblem(checks: Array<[boolean, string]>): string | undefined {
  for (const [ok, problem] of checks) if (!ok) return problem;
  return undefined;
}

export function utsFieldProblem(name: string, value: string): string | undefined {
  if (typeof value !== 'string') return `${name} is not a string`;
  if (value.includes('\0')) return `${name} contains a NUL byte`;
  const bytes = Buffer.byteLength(value, 'utf8');
  if (bytes >= UTS_FIELD_BYTES) return `${name} is ${bytes} bytes, at most ${UTS_FIELD_BYTES - 1} fit`;
  return undefined;
}

export function headerProblem(header: ImageHeader): string | undefined {
  return (
    utsFieldProblem('kernel release', header.kernelRelease) ??
    utsFieldProblem('kernel version', header.kernelVersion) ??
    utsFieldProblem('machine', header.machine) ??
    firstProblem([
      [isIntegerIn(header.major, 0, 0xffff), `major ${header.major} is not a u16`],
      [isIntegerIn(header.minor, 0, 0xffff), `minor ${header.minor} is not a u16`],
      [isIntegerIn(header.patch, 0, 0xffff), `patch ${header.patch} is not a u16`],
      [isBigIn(header.time, 0n, U64_MAX), `time ${header.time} is not a u64`],
      [isBigIn(header.uflags, 0n, U64_MAX), `uflags ${header.uflags} is not a u64`],
    ])
  );
}

/** An arch other than x86-64 is a valid image this build cannot take (E_IMAGE_UNSUPPORTED, not corrupt). */
export function archProblem(archId: number): string | undefined {
  return archId === ARCH_X86_64 ? undefined : `arch_id ${archId} is not x86-64 (${ARCH_X86_64}); only x86-64 images are supported`;
}

export function limitsProblem(limits: NamespaceLimits): string | undefined {
  const s32 = (name: string, value: number): [boolean, string] => [isIntegerIn(value, S32_MIN, INT32_MAX), `${name} ${value} is not an s32`];
  return firstProblem([
    [isBigIn(limits.shmCtlmax, 0n, U64_MAX), `shm_ctlmax ${limits.shmCtlmax} is not a u64`],
    [isBigIn(limits.shmCtlall, 0n, U64_MAX), `shm_ctlall ${limits.shmCtlall} is not a u64`],
    s32('shm_ctlmni', limits.shmCtlmni),
    // The kernel's sysctl bounds: msgmax and msgmnb in 0..INT_MAX, msgmni in 0..IPCMNI.
    [isIntegerIn(limits.msgCtlmax, 0, INT32_MAX), `msg_ctlmax ${limits.msgCtlmax} is outside 0..${INT32_MAX}`],
    [isIntegerIn(limits.msgCtlmnb, 0, INT32_MAX), `msg_ctlmnb ${limits.msgCtlmnb} is outside 0..${INT32_MAX}`],
    [isIntegerIn(limits.msgCtlmni, 0, IPCMNI), `msg_ctlmni ${limits.msgCtlmni} is outside 0..${IPCMNI}`],
    s32('sem_ctl_msl', limits.semCtlMsl),
    s32('sem_ctl_mns', limits.semCtlMns),
    s32('sem_ctl_opm', limits.semCtlOpm),
    s32('sem_ctl_mni', limits.semCtlMni),
  ]);
}

export function queueCountProblem(count: number): string | undefined {
  return isIntegerIn(count, 0, IPCMNI) ? undefined : `ipc_count ${count} is more queues than the kernel allows (${IPCMNI})`;
}

/** The rules one queue record meets on its own; order, uniqueness and message totals are checked across records. */
export function queueProblem(queue: QueueRecord): string | undefined {
  // Plain comparisons first and phrases only for a failure: every queue of an image passes through here.
  // Every field in the kernel's own range: what passes here the kernel can hold and a restore can set.
  const idOk = isIntegerIn(queue.id, 0, INT32_MAX);
  const fieldsOk =
    idOk &&
    isIntegerIn(queue.key, 0, UINT32_MAX) && isIntegerIn(queue.uid, 0, UNCHANGED_ID - 1) && isIntegerIn(queue.gid, 0, UNCHANGED_ID - 1) &&
    isIntegerIn(queue.cuid, 0, UNCHANGED_ID - 1) && isIntegerIn(queue.cgid, 0, UNCHANGED_ID - 1) && isIntegerIn(queue.mode, 0, MODE_BITS) &&
    queue.seq === queue.id >>> IPCMNI_SHIFT && isIntegerIn(queue.seq, 0, IPC_SEQ_MAX) &&
    isBigIn(queue.stime, 0n, S64_MAX) && isBigIn(queue.rtime, 0n, S64_MAX) && isBigIn(queue.ctime, 0n, S64_MAX) && isBigIn(queue.qbytes, 0n, U64_MAX) &&
    isBigIn(queue.qnum, 0n, MAX_QUEUE_COUNTER) && isBigIn(queue.cbytes, 0n, MAX_QUEUE_COUNTER) &&
    isIntegerIn(queue.lspid, 0, INT32_MAX) && isIntegerIn(queue.lrpid, 0, INT32_MAX);
  if (!fieldsOk) {
    const u32 = (name: string, value: number): [boolean, string] => [isIntegerIn(value, 0, UINT32_MAX), `${name} ${value} is not a u32`];
    const owner = (name: string, value: number): [boolean, string] => [
      isIntegerIn(value, 0, UNCHANGED_ID - 1),
      value === UNCHANGED_ID ? `${name} ${value} is (uid_t)-1, which the kernel takes for "unchanged", never an owner` : `${name} ${value} is not a u32`,
    ];
    const u64 = (name: string, value: bigint): [boolean, string] => [isBigIn(value, 0n, U64_MAX), `${name} ${value} is not a u64`];
    const time = (name: string, value: bigint): [boolean, string] => [isBigIn(value, 0n, S64_MAX), `${name} ${value} is outside 0..${S64_MAX} (a kernel time64_t)`];
    const pid = (name: string, value: number): [boolean, string] => [isIntegerIn(value, 0, INT32_MAX), `${name} ${value} is outside 0..${INT32_MAX}`];
    return firstProblem([
      [idOk, `id ${queue.id} is outside 0..${INT32_MAX}`],
      u32('key', queue.key),
      owner('uid', queue.uid),
      owner('gid', queue.gid),
      owner('cuid', queue.cuid),
      owner('cgid', queue.cgid),
      [isIntegerIn(queue.mode, 0, MODE_BITS), `mode 0${Number(queue.mode).toString(8)} has bits outside 0777`],
      [idOk && queue.seq === queue.id >>> IPCMNI_SHIFT, `seq ${queue.seq} is not id >> ${IPCMNI_SHIFT} (${queue.id >>> IPCMNI_SHIFT})`],
      [isIntegerIn(queue.seq, 0, IPC_SEQ_MAX), `seq ${queue.seq} is above ${IPC_SEQ_MAX}`],
      time('q_stime', queue.stime),
      time('q_rtime', queue.rtime),
      time('q_ctime', queue.ctime),
      u64('q_qbytes', queue.qbytes),
      [isBigIn(queue.qnum, 0n, MAX_QUEUE_COUNTER), `q_qnum ${queue.qnum} is outside 0..${MAX_QUEUE_COUNTER}`],
      [isBigIn(queue.cbytes, 0n, MAX_QUEUE_COUNTER), `q_cbytes ${queue.cbytes} is outside 0..${MAX_QUEUE_COUNTER}`],
      pid('q_lspid', queue.lspid),
      pid('q_lrpid', queue.lrpid),
    ]);
  }
  // Every message holds at most INT_MAX bytes, so the claimed total bounds itself by the claimed count.
  if (queue.cbytes > queue.qnum * BigInt(INT32_MAX)) {
    return `q_cbytes ${queue.cbytes} is more than q_qnum ${queue.qnum} messages of at most ${INT32_MAX} bytes can hold`;
  }
  return undefined;
}

/** The record as queueProblem takes it (64-bit fields as bigint). */
export function queueRecordOfNumbers(queue: NumericQueueRecord): QueueRecord {
  const big = (value: number) => (Number.isSafeInteger(value) ? BigInt(value) : -1n);
  return {
    ...queue,
    stime: big(queue.stime),
    rtime: big(queue.rtime),
    ctime: big(queue.ctime),
    cbytes: big(queue.cbytes),
    qnum: big(queue.qnum),
    qbytes: big(queue.qbytes),
  };
}

/**
 * True when queueProblem(queueRecordOfNumbers(queue)) finds nothing: the same ranges in plain number
 * comparisons (the save path checks every queue it batches); a false here goes to queueProblem for its phrase.
 */
export function numericQueueInRange(queue: NumericQueueRecord): boolean {
  const safe = Number.MAX_SAFE_INTEGER;
  return (
    isIntegerIn(queue.id, 0, INT32_MAX) && isIntegerIn(queue.key, 0, UINT32_MAX) &&
    isIntegerIn(queue.uid, 0, UNCHANGED_ID - 1) && isIntegerIn(queue.gid, 0, UNCHANGED_ID - 1) &&
    isIntegerIn(queue.cuid, 0, UNCHANGED_ID - 1) && isIntegerIn(queue.cgid, 0, UNCHANGED_ID - 1) && isIntegerIn(queue.mode, 0, MODE_BITS) &&
    queue.seq === queue.id >>> IPCMNI_SHIFT && isIntegerIn(queue.seq, 0, IPC_SEQ_MAX) &&
    isIntegerIn(queue.stime, 0, safe) && isIntegerIn(queue.rtime, 0, safe) && isIntegerIn(queue.ctime, 0, safe) && isIntegerIn(queue.qbytes, 0, safe) &&
    isIntegerIn(queue.qnum, 0, safe) && isIntegerIn(queue.cbytes, 0, safe) &&
    isIntegerIn(queue.lspid, 0, INT32_MAX) && isIntegerIn(queue.lrpid, 0, INT32_MAX) &&
    queue.cbytes <= queue.qnum * INT32_MAX
  );
}

export function messageTypeProblem(type: bigint): string | undefined {
  return isBigIn(type, 1n, S64_MAX) ? undefined : `m_type ${type} is outside 1..${S64_MAX}`;
}

export function messageSizeProblem(size: number): string | undefined {
  return isIntegerIn(size, 0, INT32_MAX) ? undefined : `m_ts ${size} is outside 0..${INT32_MAX}`;
}

/** Ranges of one side of a map overlap: translation would be ambiguous (the kernel refuses such maps). */
function overlapProblem(name: string, extents: IdExtent[], side: 'inside' | 'outside'): string | undefined {
  const sorted = [...extents].sort((a, b) => a[side] - b[side]);
  for (let i = 1; i < sorted.length; i++) {
    const before = sorted[i - 1];
    if (before[side] + before.count > sorted[i][side]) return `${name} extents overlap ${side} at ${sorted[i][side]}`;
  }
  return undefined;
}

function extentsProblem(name: string, extents: IdExtent[]): string | undefined {
  if (!Array.isArray(extents) || extents.length > ID_MAPPING_MAX_EXTENTS) {
    return `${name} has ${Array.isArray(extents) ? extents.length : 'no'} extents, at most ${ID_MAPPING_MAX_EXTENTS} are allowed`;
  }
  for (const [index, extent] of extents.entries()) {
    const range = `${name} extent ${index} (${extent.inside} ${extent.outside} ${extent.count})`;
    if (!isIntegerIn(extent.inside, 0, UINT32_MAX) || !isIntegerIn(extent.outside, 0, UINT32_MAX)) return `${range} has an id that is not a u32`;
    if (!isIntegerIn(extent.count, 1, UINT32_MAX)) return `${range} has a count outside 1..${UINT32_MAX}`;
    if (extent.inside + extent.count > UINT32_MAX + 1 || extent.outside + extent.count > UINT32_MAX + 1) return `${range} runs past ${UINT32_MAX}`;
  }
  return overlapProblem(name, extents, 'inside') ?? overlapProblem(name, extents, 'outside');
}

/** The id-mapping record's maps: what a kernel uid_map/gid_map may hold. */
export function idMappingProblem(mapping: ImageIdMapping): string | undefined {
  return extentsProblem('uid_map', mapping.uid) ?? extentsProblem('gid_map', mapping.gid);
}
