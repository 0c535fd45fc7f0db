// save: every message queue of a namespace -> native batch copies (MSG_COPY, non-destructive) ->
// encoder -> output. A queue that changes while it is copied is detected and copied again.
import * as os from 'node:os';
import type { Writable } from 'node:stream';
import { IpcCkptError, throwIfAborted } from './errors';
import { ImageEncoder } from './image/encoder';
import { ARCH_X86_64, IPCMNI, IpcMsgLayout } from './image/layout';
import type { ImageHeader, NamespaceLimits, NumericQueueRecord, QueueRecord } from './image/model';
import { ImageOutput, openOutputPath, planOutputPath, StreamImageOutput } from './image-output';
import { FrozenCgroup } from './freezer';
import { describeUnmapped, ID_FIELD_LIST, ID_FIELDS, namespaceIdsOf, NamespaceIds } from './id-mapping';
import { openNamespace } from './namespace';
import { COPIED_PART_FIELDS, COPY_REQUEST_FIELDS, CopiedQueues, NativeNamespace, PACKED_MESSAGE_HEADER_BYTES, QUEUE_STAT_DOUBLES, QueueStat, QueueStatField, IpcSysctls, unpackQueueStat } from './native';
import { LockOptions, NamespaceLock } from './namespace-lock';
import { RaisedSysctls } from './raised-sysctls';
import { RollbackGuardian } from './rollback-guardian';
import { resolveTarget, ResolvedTarget, Target } from './target';
import { PosixQueueSaver, queueSelection } from './posix-queues';

/** signal ends the save between batches (E_INTERRUPTED: nothing written, limits put back); waitSeconds/onLockWait: the namespace lock. */
export interface SaveOptions extends LockOptions {
  /** Freeze the target pid's cgroup for the duration of the save (always thawed). */
  freeze?: boolean;
  /** Refuse what v16 cannot hold (message types beyond s32) instead of widening the record. */
  strictV16?: boolean;
  /** Copies of one queue before a queue that keeps changing fails the save. */
  maxAttempts?: number;
  /** Progress callback, called after each batch. */
  onProgress?: (progress: SaveProgress) => void;
  /** Packed bytes per native copy batch. */
  batchBytes?: number;
  /** The caller asserts nothing uses the namespace's POSIX queues during the save (instead of freeze). */
  quiescent?: boolean;
  /** Save only the SysV queues, or only the POSIX queues (the image's SysV section is then empty). */
  sysvOnly?: boolean;
  posixOnly?: boolean;
}

export interface SaveProgress {
  queuesDone: number;
  queuesTotal: number;
  messagesDone: number;
  messagesTotal: number;
}

export interface SaveSummary {
  queues: number;
  messages: number;
  /** Message body bytes. */
  messageBytes: number;
  imageBytes: number;
  seconds: number;
  /** Queue copies that were thrown away because the queue changed meanwhile. */
  retries: number;
  /** Times the save waited for the next second: a queue had changed within the current one, when an unchanged stat proves nothing. */
  secondWaits: number;
  /** The namespace's msgmax was raised for the copy and put back. */
  msgmaxRaised: boolean;
  /** SHA-256 of the image before its integrity record, hex. */
  digest: string;
  /** POSIX queues and their messages saved (taken and put back). */
  posixQueues: number;
  posixMessages: number;
}

const DEFAULT_MAX_ATTEMPTS = 5;
// 1 MiB keeps peak RSS low: larger batches pile up between garbage collections and gain nothing.
const DEFAULT_BATCH_BYTES = 1 << 20;
/** Messages per native copy batch, besides the byte bound. */
const BATCH_MESSAGES = 16384;
/**
 * The kernel stamps a queue's changes with its coarse clock (ktime_get_real_seconds, advanced at timer ticks),
 * which can still read the previous second for a tick after Date.now() has passed into the next one.
 */
const KERNEL_SECOND_LAG_MS = 50;

/** The earliest second that a change made after the moment `ms` (Date.now()) can carry in stime/rtime/ctime. */
function earliestChangeSecond(ms: number): number {
  return Math.floor((ms - KERNEL_SECOND_LAG_MS) / 1000);
}

/**
 * A batch copied this soon after the queue listing takes the listing's stats as its stats from before the copy
 * (a change since the listing only sends the queue the single-queue way); a later one stats each queue anew.
 */
const LISTING_STANDS_IN_MS = 1000;

/** One copyQueues crossing, the stats from before it, and the second those were taken in. */
interface CopiedBatchOf {
  copied: CopiedQueues;
  before: Float64Array;
  startSecond: number;
}

/** copyQueues crossings asked for ahead of the one being encoded. */
const PREFETCHED_BATCHES = 2;
/** Queues per copyQueues crossing, besides the byte bound. */
const COPY_BATCH_QUEUES = 4096;
/**
 * Several queues share a copyQueues crossing up to this many packed bytes (a queue up to the batch size
 * still has one of its own): the next crossing copies while this one is encoded, so a namespace of a
 * few small queues is not copied whole before its encoding starts (100 queues x 100 x 64 B: 47 -> 41 ms).
 */
const QUEUE_GROUP_BYTES = 128 << 10;
/** The smallest MSG_COPY buffer worth passing. */
const MIN_COPY_BUFFER = 64;
/** Waits for the next second for one queue before a queue that changes every second fails the save. */
const MAX_SECOND_WAITS = 2;
/** Attempts at the whole namespace when queues appear or vanish during the save. */
const NAMESPACE_ATTEMPTS = 3;

const FREEZE_ADVICE =
  'Stop the workload from changing it during the save: `ipc-ckpt save --freeze -t PID` freezes its cgroup, ' +
  'or pause it yourself (`docker pause CONTAINER`, or write FROZEN/1 to its cgroup freezer) and save again.';

/** A queue that changed under us: the copy is thrown away and made again (not before retryAt, when set). */
class QueueChanged extends Error {
  constructor(
    message: string,
    readonly retryAt?: number,
  ) {
    super(message);
  }
}

function sameStat(a: QueueStat, b: QueueStat): boolean {
  return (
    a.id === b.id && a.key === b.key && a.uid === b.uid && a.gid === b.gid && a.cuid === b.cuid && a.cgid === b.cgid &&
    a.mode === b.mode && a.stime === b.stime && a.rtime === b.rtime && a.ctime === b.ctime && a.cbytes === b.cbytes &&
    a.qnum === b.qnum && a.qbytes === b.qbytes && a.lspid === b.lspid && a.lrpid === b.lrpid
  );
}

export function queueRecordFromStat(stat: QueueStat): QueueRecord {
  return {
    id: stat.id,
    key: stat.key,
    uid: stat.uid,
    gid: stat.gid,
    cuid: stat.cuid,
    cgid: stat.cgid,
    mode: stat.mode,
    seq: stat.seq,
    stime: stat.stime,
    rtime: stat.rtime,
    ctime: stat.ctime,
    cbytes: BigInt(stat.cbytes),
    qnum: BigInt(stat.qnum),
    qbytes: BigInt(stat.qbytes),
    lspid: stat.lspid,
    lrpid: stat.lrpid,
  };
}

/**
 * The queue's ids as the image holds them: the namespace's own view (and the id-mapping record says so),
 * or host ids in a strict v16 image, which has no such record. An id the namespace cannot see is refused.
 */
export function queueRecordInImageView(record: QueueRecord, ids: NamespaceIds, strictV16: boolean, label: string): QueueRecord {
  if (strictV16) return record;
  const { ids: view, unmapped } = ids.namespaceView(record);
  if (unmapped.length > 0) {
    throw new IpcCkptError('E_UNMAPPED_ID', `queue ${record.id} (key 0x${record.key.toString(16)}) in ${label} has host ${describeUnmapped(unmapped)}, which the user namespace that owns it, ${ids.describe()}, does not map: the namespace sees it as the overflow id. Give the queue a mapped owner (msgctl IPC_SET), or save with --strict-v16 to keep host ids`);
  }
  return view;
}

export function limitsFromSysctls(sysctls: IpcSysctls): NamespaceLimits {
  return {
    shmCtlmax: sysctls.shmmax,
    shmCtlall: sysctls.shmall,
    shmCtlmni: sysctls.shmmni,
    msgCtlmax: sysctls.msgmax,
    msgCtlmnb: sysctls.msgmnb,
    msgCtlmni: sysctls.msgmni,
    semCtlMsl: sysctls.semmsl,
    semCtlMns: sysctls.semmns,
    semCtlOpm: sysctls.semopm,
    semCtlMni: sysctls.semmni,
  };
}

export function hostHeader(time: bigint): ImageHeader {
  const release = os.release();
  const [major = 0, minor = 0, patch = 0] = (/^(\d+)\.(\d+)(?:\.(\d+))?/.exec(release) ?? []).slice(1).map((n) => Number(n ?? 0));
  return { kernelRelease: release, kernelVersion: os.version(), machine: os.machine(), major, minor, patch, archId: ARCH_X86_64, time, uflags: 0n };
}

// Local constants of the packed stat's places (QueueStatField): read in the per-queue loops.
const { stime: STAT_STIME, rtime: STAT_RTIME, ctime: STAT_CTIME, cbytes: STAT_CBYTES, qnum: STAT_QNUM, key: STAT_KEY, mode: STAT_MODE, qbytes: STAT_QBYTES, lspid: STAT_LSPID, lrpid: STAT_LRPID } = QueueStatField;
/** The owner and creator fields of a packed stat: the record field, which map translates it, its place. */
const ID_STAT_FIELDS = ID_FIELD_LIST.map((field) => [field, ID_FIELDS[field], QueueStatField[field]] as const);

/** Queue k's packed size by its listed stat: what one batch must hold for it. */
function packedBytesAt(stats: Float64Array, k: number): number {
  return stats[k * QUEUE_STAT_DOUBLES + STAT_CBYTES] + stats[k * QUEUE_STAT_DOUBLES + STAT_QNUM] * PACKED_MESSAGE_HEADER_BYTES;
}

/** Every field of packed stat k equal in both arrays. */
function samePackedStat(a: Float64Array, b: Float64Array, k: number): boolean {
  for (let i = k * QUEUE_STAT_DOUBLES; i < (k + 1) * QUEUE_STAT_DOUBLES; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** The same queue ids, in the same order, in two packed listings. */
function sameIds(a: Float64Array, b: Float64Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i += QUEUE_STAT_DOUBLES) if (a[i] !== b[i]) return false;
  return true;
}

/** The power of two at or above a queue's average message: the first MSG_COPY buffer worth passing. */
function bufferSizeFor(cbytes: number, qnum: number): number {
  return qnum > 0 ? Math.max(MIN_COPY_BUFFER, 2 ** Math.ceil(Math.log2(Math.max(1, cbytes / qnum)))) : MIN_COPY_BUFFER;
}

/** Offset just past the first packed message, and the message's bytes. */
function firstPackedMessage(data: Buffer): Buffer {
  return data.subarray(0, PACKED_MESSAGE_HEADER_BYTES + data.readUInt32LE(8));
}

function lastPackedMessage(data: Buffer, count: number): Buffer {
  let offset = 0;
  for (let i = 0; i < count - 1; i++) offset += PACKED_MESSAGE_HEADER_BYTES + data.readUInt32LE(offset + 8);
  return data.subarray(offset, offset + PACKED_MESSAGE_HEADER_BYTES + data.readUInt32LE(offset + 8));
}

function packedBodyBytes(data: Buffer, count: number): number {
  return data.length - count * PACKED_MESSAGE_HEADER_BYTES;
}

/** One save: the namespace session, the output and what was raised, undone in finish(). */
class SaveRun {
  private readonly encoder: ImageEncoder;
  readonly raised: RaisedSysctls;
  private originalMsgmax: number | undefined;
  private currentMsgmax = 0;
  private copyBufferSize = MIN_COPY_BUFFER;
  private ids: NamespaceIds | undefined;
  private readonly scratchRecord: NumericQueueRecord = { id: 0, key: 0, uid: 0, gid: 0, cuid: 0, cgid: 0, mode: 0, seq: 0, stime: 0, rtime: 0, ctime: 0, cbytes: 0, qnum: 0, qbytes: 0, lspid: 0, lrpid: 0 };
  readonly summary: SaveSummary = { queues: 0, messages: 0, messageBytes: 0, imageBytes: 0, seconds: 0, retries: 0, secondWaits: 0, msgmaxRaised: false, digest: '', posixQueues: 0, posixMessages: 0 };
  private progress: SaveProgress = { queuesDone: 0, queuesTotal: 0, messagesDone: 0, messagesTotal: 0 };
  /** The POSIX half (lib/posix-queues.ts); undefined with --sysv-only. */
  readonly posix: PosixQueueSaver | undefined;
  private readonly sysv: boolean;

  constructor(
    private readonly ns: NativeNamespace,
    private readonly target: ResolvedTarget,
    private readonly output: ImageOutput,
    private readonly options: SaveOptions,
    private readonly lock: NamespaceLock,
    private readonly guardian: RollbackGuardian,
  ) {
    this.encoder = new ImageEncoder({ strictV16: options.strictV16 });
    this.raised = new RaisedSysctls(ns, target, guardian);
    const selection = queueSelection(options);
    this.sysv = selection !== 'posix';
    this.posix = selection === 'sysv' ? undefined : new PosixQueueSaver(ns, target.label, { strictV16: options.strictV16, frozen: options.freeze === true, quiescent: options.quiescent });
  }

  /** Between batches: a signal or the guardian's death ends the save here. */
  private checkpoint(): void {
    throwIfAborted(this.options.signal);
    this.guardian.throwIfDead();
  }

  async saveNamespace(): Promise<void> {
    this.ids = await namespaceIdsOf(this.ns, this.target.label);
    for (let attempt = 1; ; attempt++) {
      const start = this.output.mark();
      const sysctls = await this.ns.readSysctls();
      this.currentMsgmax = sysctls.msgmax;
      const limits = limitsFromSysctls(this.originalMsgmax === undefined ? sysctls : { ...sysctls, msgmax: this.originalMsgmax });
      const listedAt = Date.now();
      const queues = this.sysv ? await this.ns.listQueueStats() : new Float64Array(0);
      const queueCount = queues.length / QUEUE_STAT_DOUBLES;
      let messagesTotal = 0;
      for (let k = 0; k < queueCount; k++) messagesTotal += queues[k * QUEUE_STAT_DOUBLES + STAT_QNUM];
      this.progress = { queuesDone: 0, queuesTotal: queueCount, messagesDone: 0, messagesTotal };
      await this.output.write(this.encoder.header(hostHeader(BigInt(Math.floor(Date.now() / 1000)))));
      await this.output.write(this.encoder.limits(limits));
      if (!this.options.strictV16) await this.output.write(this.encoder.idMapping(this.ids.imageMapping));
      await this.output.write(this.encoder.msgSection(queueCount));
      try {
        await this.saveQueues(queues, listedAt);
        if (!sameIds(this.sysv ? await this.ns.listQueueStats() : new Float64Array(0), queues)) throw new QueueChanged('queues were created or removed during the save');
      } catch (error) {
        if (!(error instanceof QueueChanged)) throw error;
        if (attempt >= NAMESPACE_ATTEMPTS || !this.output.canRollback(start)) {
          throw new IpcCkptError('E_TORN', `${this.target.label} kept changing during the save (${error.message}). ${FREEZE_ADVICE}`);
        }
        this.summary.retries++;
        await this.output.rollback(start);
        continue;
      }
      this.checkpoint();
      this.summary.queues = queueCount;
      await this.posix?.save((part) => this.output.write(part));
      this.summary.posixQueues = this.posix?.summary.queues ?? 0;
      this.summary.posixMessages = this.posix?.summary.messages ?? 0;
      const digest = this.output.currentDigest();
      this.summary.digest = digest.toString('hex');
      await this.output.write(this.encoder.trailer(digest));
      return;
    }
  }

  /** A queue's record as the image holds it (see queueRecordInImageView). */
  private imageRecord(stat: QueueStat): QueueRecord {
    if (!this.ids) throw new IpcCkptError('E_INTERNAL', 'queue copied before the namespace ids were read');
    return queueRecordInImageView(queueRecordFromStat(stat), this.ids, this.options.strictV16 === true, this.target.label);
  }

  /**
   * Small queues go in batches of one crossing each, the next batch copied while the current one is
   * encoded and written; a queue too large for a batch, or one a batch could not certify, goes alone.
   */
  private async saveQueues(queues: Float64Array, listedAt: number): Promise<void> {
    const batchBytes = this.options.batchBytes ?? DEFAULT_BATCH_BYTES;
    const groupBytes = Math.min(batchBytes, QUEUE_GROUP_BYTES);
    const queueCount = queues.length / QUEUE_STAT_DOUBLES;
    // [from, to): a batch when it holds more than a queue that is too large for one.
    const ranges: Array<[number, number, boolean]> = [];
    for (let next = 0; next < queueCount; ) {
      let end = next;
      let bytes = 0;
      while (end < queueCount && end - next < COPY_BATCH_QUEUES) {
        const packed = packedBytesAt(queues, end);
        if (queues[end * QUEUE_STAT_DOUBLES + STAT_QNUM] >= BATCH_MESSAGES || packed > batchBytes || (end > next && bytes + packed > groupBytes)) break;
        bytes += packed;
        end++;
      }
      if (end === next) ranges.push([next, ++next, false]);
      else {
        ranges.push([next, end, true]);
        next = end;
      }
    }
    const copyRange = (r: number) => {
      const copy = r < ranges.length && ranges[r][2] ? this.copyQueueBatch(queues, ranges[r][0], ranges[r][1], listedAt) : undefined;
      // Awaited later: a failure meanwhile must fail the save there, not crash it as an unhandled rejection.
      copy?.catch(() => undefined);
      return copy;
    };
    // Copies of the next ranges, queued on the namespace thread: it goes on to the next one while this
    // one is encoded, instead of waiting for the encoding to end before it is asked.
    const prefetched: Array<Promise<CopiedBatchOf> | undefined> = [];
    for (let r = 0; r < PREFETCHED_BATCHES && r < ranges.length; r++) prefetched.push(copyRange(r));
    try {
      for (let r = 0; r < ranges.length; r++) {
        this.checkpoint();
        const [from, to, batched] = ranges[r];
        const copied = prefetched.shift();
        if (!batched) {
          // A queue alone is copied in its own crossings, after the batches already asked for.
          await this.saveQueue(unpackQueueStat(queues, from));
          prefetched.push(copyRange(r + PREFETCHED_BATCHES));
          continue;
        }
        const result = await copied!;
        prefetched.push(copyRange(r + PREFETCHED_BATCHES));
        await this.saveBatch(queues, from, to, result);
      }
    } finally {
      for (const copy of prefetched) await copy?.catch(() => undefined);
    }
  }

  /**
   * Starts one copyQueues crossing for the listed queues [from, to); resolves with it, the stats from before
   * the copy and the second they were taken in (no change may carry it or a later one). Within
   * LISTING_STANDS_IN_MS of the listing, the listing is that stat (one IPC_STAT a queue fewer); later, each queue is stat'ed anew.
   */
  private async copyQueueBatch(listed: Float64Array, from: number, to: number, listedAt: number): Promise<CopiedBatchOf> {
    const now = Date.now();
    const listingStandsIn = now - listedAt < LISTING_STANDS_IN_MS;
    const startSecond = earliestChangeSecond(listingStandsIn ? listedAt : now);
    const requests = new Float64Array((to - from) * COPY_REQUEST_FIELDS.length);
    for (let k = from; k < to; k++) {
      const stat = k * QUEUE_STAT_DOUBLES;
      const qnum = listed[stat + STAT_QNUM];
      const request = (k - from) * COPY_REQUEST_FIELDS.length;
      requests[request] = listed[stat];
      // No probe past the last message: the unchanged stat around the copy already proves there is none.
      requests[request + 1] = qnum;
      requests[request + 2] = Math.max(1, packedBytesAt(listed, k));
      requests[request + 3] = Math.min(bufferSizeFor(listed[stat + STAT_CBYTES], qnum), this.currentMsgmax);
      requests[request + 4] = listingStandsIn ? 0 : 1;
    }
    const copied = await this.ns.copyQueues(requests);
    const before = listingStandsIn ? listed.subarray(from * QUEUE_STAT_DOUBLES, to * QUEUE_STAT_DOUBLES) : copied.statsBefore;
    return { copied, before, startSecond };
  }

  /**
   * Keeps what one copyQueues crossing copied of the listed queues [from, to). A queue's copy is kept only
   * when its stat is unchanged from before its first copy to after its last, with no change within the second
   * the batch began in (so nothing at all changed in between: every change stamps a time of that second or
   * later), and the messages copied are the stat's qnum, their bytes its cbytes. Anything else hands the queue
   * to saveQueue, which copies it again on its own.
   */
  private async saveBatch(listed: Float64Array, from: number, to: number, { copied, before, startSecond }: CopiedBatchOf): Promise<void> {
    const failed = new Set(copied.errors.map((e) => e.index));
    const { statsAfter: after, parts } = copied;
    // Certified queues wait here and go out as one buffer: before a queue that must be copied alone, and at the end.
    let kept: number[] = [];
    const writeKept = async () => {
      if (kept.length === 0) return;
      const encoded = this.encodeCertified(copied, before, kept);
      kept = [];
      await this.output.write(encoded);
    };
    for (let k = 0; k < to - from; k++) {
      const stat = k * QUEUE_STAT_DOUBLES;
      if (failed.has(k) || before[stat + STAT_STIME] >= startSecond || before[stat + STAT_RTIME] >= startSecond || before[stat + STAT_CTIME] >= startSecond) {
        // saveQueue raises msgmax, finds the queue gone, or waits for the next second, as it would alone.
        await writeKept();
        await this.saveQueue(unpackQueueStat(listed, from + k));
        continue;
      }
      const part = k * COPIED_PART_FIELDS.length;
      const length = parts[part + 1];
      const count = parts[part + 2];
      if (!samePackedStat(before, after, k) || count !== before[stat + STAT_QNUM] || length - count * PACKED_MESSAGE_HEADER_BYTES !== before[stat + STAT_CBYTES]) {
        await writeKept();
        this.summary.retries++;
        await this.saveQueue(unpackQueueStat(listed, from + k));
        continue;
      }
      kept.push(k);
      this.summary.messages += count;
      this.summary.messageBytes += before[stat + STAT_CBYTES];
      this.progress.messagesDone += count;
      this.progress.queuesDone++;
    }
    await writeKept();
    await this.output.settle();
    this.report();
  }
  /** The IPC_MSG records and messages of certified queues of a copyQueues batch, in one buffer. */
  private encodeCertified(copied: CopiedQueues, before: Float64Array, kept: readonly number[]): Buffer {
    const { parts, data } = copied;
    const messages = (k: number) => data.subarray(parts[k * COPIED_PART_FIELDS.length], parts[k * COPIED_PART_FIELDS.length] + parts[k * COPIED_PART_FIELDS.length + 1]);
    const countOf = (k: number) => parts[k * COPIED_PART_FIELDS.length + 2];
    let total = 0;
    for (const k of kept) total += IpcMsgLayout.BYTES + (countOf(k) > 0 ? this.encoder.packedMessagesBytes(messages(k), countOf(k)) : 0);
    const out = Buffer.allocUnsafe(total);
    let at = 0;
    for (const k of kept) {
      at = this.encoder.queueInto(out, at, this.numericImageRecord(before, k));
      if (countOf(k) > 0) at = this.encoder.writePackedMessages(messages(k), countOf(k), out, at);
    }
    return out;
  }

  /** Packed stat k as its image record (see queueRecordInImageView), as plain numbers into one reused object. */
  private numericImageRecord(stats: Float64Array, k: number): NumericQueueRecord {
    const o = k * QUEUE_STAT_DOUBLES;
    const record = this.scratchRecord;
    record.id = stats[o];
    record.key = stats[o + STAT_KEY];
    record.mode = stats[o + STAT_MODE];
    record.seq = Math.floor(record.id / IPCMNI);
    record.stime = stats[o + STAT_STIME];
    record.rtime = stats[o + STAT_RTIME];
    record.ctime = stats[o + STAT_CTIME];
    record.cbytes = stats[o + STAT_CBYTES];
    record.qnum = stats[o + STAT_QNUM];
    record.qbytes = stats[o + STAT_QBYTES];
    record.lspid = stats[o + STAT_LSPID];
    record.lrpid = stats[o + STAT_LRPID];
    const ids = this.ids;
    if (!ids) throw new IpcCkptError('E_INTERNAL', 'queue copied before the namespace ids were read');
    const translate = !this.options.strictV16 && !ids.ownUserNamespace;
    for (const [field, kind, at] of ID_STAT_FIELDS) {
      const hostId = stats[o + at];
      const id = translate ? ids.toNamespace(kind, hostId) : hostId;
      if (id === undefined) {
        // The slow path throws the E_UNMAPPED_ID that names the queue and the id.
        queueRecordInImageView(queueRecordFromStat(unpackQueueStat(stats, k)), ids, false, this.target.label);
        throw new IpcCkptError('E_INTERNAL', `queue ${record.id}: host ${field} ${hostId} has no namespace id`);
      }
      record[field] = id;
    }
    return record;
  }


  private async saveQueue(listed: QueueStat): Promise<void> {
    const maxAttempts = this.options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS;
    let secondWaits = 0;
    for (let attempt = 1; ; attempt++) {
      const mark = this.output.mark();
      const before = { messages: this.summary.messages, bytes: this.summary.messageBytes, progress: this.progress.messagesDone };
      try {
        await this.copyQueue(listed);
        await this.output.settle();
        this.progress.queuesDone++;
        this.report();
        return;
      } catch (error) {
        if (!(error instanceof QueueChanged)) throw error;
        const waitsForSecond = error.retryAt !== undefined;
        if (attempt >= maxAttempts || !this.output.canRollback(mark) || (waitsForSecond && secondWaits >= MAX_SECOND_WAITS)) {
          throw new IpcCkptError('E_TORN', `queue ${listed.id} (key 0x${listed.key.toString(16)}) in ${this.target.label} kept changing while it was copied (${error.message}; ${attempt} attempt(s)). ${FREEZE_ADVICE}`);
        }
        if (waitsForSecond) {
          secondWaits++;
          this.summary.secondWaits++;
        } else this.summary.retries++;
        this.summary.messages = before.messages;
        this.summary.messageBytes = before.bytes;
        this.progress.messagesDone = before.progress;
        await this.output.rollback(mark);
        const delay = error.retryAt !== undefined ? error.retryAt - Date.now() : attempt * 10;
        await new Promise((resolve) => setTimeout(resolve, Math.max(0, delay)));
      }
    }
  }

  private async statOrVanished(id: number): Promise<QueueStat> {
    try {
      return await this.ns.statQueue(id);
    } catch (error) {
      if (error instanceof IpcCkptError && (error.code === 'EINVAL' || error.code === 'EIDRM')) throw new QueueChanged(`queue ${id} was removed`);
      throw error;
    }
  }

  /** Copies one queue; throws QueueChanged when what was copied may not be a state the queue had. */
  private async copyQueue(listed: QueueStat): Promise<void> {
    const startedMs = Date.now();
    const stat = await this.statOrVanished(listed.id);
    // stime/rtime/ctime count whole seconds: an unchanged stat proves that nothing moved only when the
    // queue's last change came before the second this copy began in. Otherwise wait for the next second.
    const startSecond = earliestChangeSecond(startedMs);
    if (stat.stime >= BigInt(startSecond) || stat.rtime >= BigInt(startSecond) || stat.ctime >= BigInt(startSecond)) {
      throw new QueueChanged('it changed within the second its copy began', (startSecond + 1) * 1000 + KERNEL_SECOND_LAG_MS + 5);
    }
    if (stat.qnum > 0) this.copyBufferSize = bufferSizeFor(stat.cbytes, stat.qnum);
    await this.output.write(this.encoder.queue(this.imageRecord(stat)));
    let copied = 0;
    let copiedBytes = 0;
    let last: Buffer | undefined;
    // Each batch after the first starts by copying the previous batch's last message again:
    // if it moved, messages before it were received meanwhile.
    const copyFrom = (first: number) => {
      const copy = this.copyBatch(stat, first, Math.min(BATCH_MESSAGES, stat.qnum - first));
      // Awaited later: a failure while this batch is written must surface there, not as an unhandled rejection.
      copy.catch(() => undefined);
      return copy;
    };
    let next = stat.qnum > 0 ? copyFrom(0) : undefined;
    try {
      while (copied < stat.qnum && next) {
        this.checkpoint();
        const batch = await next;
        next = undefined;
        if (!sameStat(batch.statBefore, stat) || !sameStat(batch.statAfter, stat)) throw new QueueChanged('its stat changed');
        let data = batch.data;
        let count = batch.count;
        if (last) {
          if (count === 0 || !firstPackedMessage(data).equals(last)) throw new QueueChanged('its messages moved');
          data = data.subarray(last.length);
          count--;
        }
        if (count === 0) throw new QueueChanged('it ended early');
        last = Buffer.from(lastPackedMessage(data, count));
        copied += count;
        // The next copy runs on the namespace thread while this batch is encoded, hashed and written.
        if (copied < stat.qnum) next = copyFrom(copied - 1);
        await this.output.write(this.encoder.messagesFromPacked(data, count));
        copiedBytes += packedBodyBytes(data, count);
        this.summary.messages += count;
        this.summary.messageBytes += packedBodyBytes(data, count);
        this.progress.messagesDone += count;
        this.report();
      }
    } finally {
      // A copy in flight when this one failed: its result (or failure) goes nowhere.
      await next?.catch(() => undefined);
    }
    // Messages that moved during a batch can leave the stat as it was; their sizes then rarely add up.
    if (copiedBytes !== stat.cbytes) throw new QueueChanged('its messages do not add up to its byte count');
    // The last message must still be the last one, and the stat unchanged, once everything is copied.
    if (last) {
      const check = await this.copyBatch(stat, copied - 1, 2);
      if (check.count !== 1 || !check.end || !firstPackedMessage(check.data).equals(last) || !sameStat(check.statAfter, stat)) {
        throw new QueueChanged('its tail changed');
      }
    } else if (!sameStat(await this.statOrVanished(stat.id), stat)) {
      throw new QueueChanged('its stat changed');
    }
  }

  private async copyBatch(stat: QueueStat, first: number, count: number) {
    for (;;) {
      try {
        const batch = await this.ns.copyMessages(stat.id, first, count, this.options.batchBytes ?? DEFAULT_BATCH_BYTES, Math.min(this.copyBufferSize, this.currentMsgmax));
        this.copyBufferSize = batch.bufferSize;
        return batch;
      } catch (error) {
        if (error instanceof IpcCkptError && (error.code === 'EINVAL' || error.code === 'EIDRM')) throw new QueueChanged(`queue ${stat.id} was removed`);
        // A message larger than today's msgmax cannot be copied until msgmax is raised.
        if (error instanceof IpcCkptError && error.code === 'E2BIG' && this.currentMsgmax < stat.cbytes) {
          await this.raiseMsgmax(stat.cbytes);
          continue;
        }
        throw error;
      }
    }
  }

  private async raiseMsgmax(value: number): Promise<void> {
    this.originalMsgmax ??= this.currentMsgmax;
    // Changing a limit takes the lock exclusively; others may have changed msgmax while we waited.
    if (this.lock.mode !== 'exclusive') {
      await this.lock.upgrade(this.options);
      this.currentMsgmax = (await this.ns.readSysctls()).msgmax;
      if (this.currentMsgmax >= value) return;
    }
    await this.raised.set('msgmax', value, this.currentMsgmax);
    this.currentMsgmax = value;
    this.summary.msgmaxRaised = true;
  }

  private report(): void {
    this.options.onProgress?.({ ...this.progress });
  }

  /** Puts back what was raised and ends the guardian; runs on success and failure. */
  async finish(): Promise<void> {
    const problems = await this.raised.putBack();
    await this.raised.finish();
    if (problems.length > 0) throw new IpcCkptError('E_INTERNAL', `putting the namespace's limits back failed: ${problems.join('; ')}`);
  }
}

/** Saves every queue of the target namespace into output (a file path, '-' for stdout, or a stream). */
export async function save(target: Target | undefined, output: string | Writable, options: SaveOptions = {}): Promise<SaveSummary> {
  const started = process.hrtime.bigint();
  const resolved = resolveTarget(target);
  if (options.freeze && resolved.pid === undefined) {
    throw new IpcCkptError('E_USAGE', '--freeze needs the target as a pid (-t PID or --ns /proc/PID/ns/ipc): it freezes that process\'s cgroup');
  }
  const outputPlan = typeof output === 'string' && output !== '-' ? await planOutputPath(output) : undefined;
  throwIfAborted(options.signal);
  // Shared: saves that change no limit run side by side; one that raises msgmax upgrades it.
  const lock = await NamespaceLock.acquire(resolved, 'shared', options);
  const guardian = new RollbackGuardian(resolved, { lockFd: lock.fd });
  try {
    return await saveLocked(resolved, output, outputPlan, options, lock, guardian, started);
  } finally {
    await guardian.finish();
    lock.release();
  }
}

async function saveLocked(
  resolved: ResolvedTarget,
  output: string | Writable,
  outputPlan: Awaited<ReturnType<typeof planOutputPath>> | undefined,
  options: SaveOptions,
  lock: NamespaceLock,
  guardian: RollbackGuardian,
  started: bigint,
): Promise<SaveSummary> {
  const ns = await openNamespace(resolved);
  let imageOutput: ImageOutput | undefined;
  let run: SaveRun | undefined;
  let frozen: FrozenCgroup | undefined;
  let committed = false;
  try {
    imageOutput = outputPlan ? await openOutputPath(outputPlan, { guardian, signal: options.signal }) : new StreamImageOutput(typeof output === 'string' ? process.stdout : output, { signal: options.signal });
    run = new SaveRun(ns, resolved, imageOutput, options, lock, guardian);
    if (options.freeze && resolved.pid !== undefined) frozen = await FrozenCgroup.freeze(resolved.pid, guardian);
    await run.posix?.prepare();
    await run.saveNamespace();
    run.summary.imageBytes = imageOutput.position;
    await imageOutput.commit();
    committed = true;
    if (typeof output !== 'string') output.end();
  } catch (error) {
    if (typeof output !== 'string') output.destroy(error as Error);
    throw error;
  } finally {
    try {
      if (frozen) await frozen.thaw();
      // The temporary goes before the guardian is told "done": a kill between the two must not leave it.
      if (!committed) await imageOutput?.discard();
      await run?.finish();
    } finally {
      await ns.close();
    }
  }
  run.summary.seconds = Number(process.hrtime.bigint() - started) / 1e9;
  return run.summary;
}
