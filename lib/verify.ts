// verify: the live namespace against an image, every restorable field and every message in order.
// It reads the image once and copies each live queue (MSG_COPY) side by side with it.
import type { Readable } from 'node:stream';
import { decodeImage } from './image/decoder';
import type { ImageIdMapping, NamespaceLimits, QueueRecord } from './image/model';
import { describeUnmapped, imageIdsInNamespaceView, namespaceIdsOf } from './id-mapping';
import { openImageSource } from './image-input';
import { openNamespace } from './namespace';
import { NativeNamespace, PACKED_MESSAGE_HEADER_BYTES, QueueStat } from './native';
import { NOT_RESTORABLE_FIELDS } from './restore';
import { RaisedSysctls } from './raised-sysctls';
import { IpcCkptError, throwIfAborted } from './errors';
import { LockOptions, NamespaceLock } from './namespace-lock';
import { RollbackGuardian } from './rollback-guardian';
import { resolveTarget, ResolvedTarget, Target } from './target';
import { PosixQueueComparison, queueSelection } from './posix-queues';

/** signal ends the verify between batches (E_INTERRUPTED, msgmax put back); waitSeconds/onLockWait: the namespace lock. */
export interface VerifyOptions extends LockOptions {
  /** Do not compare msgmax/msgmnb/msgmni (for a restore made with --keep-limits). */
  ignoreLimits?: boolean;
  /** Compare only the image's queues: queues of the namespace that the image does not hold are not differences. */
  ignoreOtherQueues?: boolean;
  strictV16?: boolean;
  /** The caller asserts nothing uses the POSIX queues meanwhile: their messages are taken, compared and put back. */
  quiescent?: boolean;
  /** Compare only the SysV queues, or only the POSIX queues. */
  sysvOnly?: boolean;
  posixOnly?: boolean;
}

export interface VerifyResult {
  equal: boolean;
  differences: string[];
  queues: number;
  messages: number;
  /** Saved fields that a restore cannot set, so verify does not compare them. */
  skippedFields: readonly string[];
  /** How uid/gid/cuid/cgid are compared and shown: as the target namespace sees them. */
  idView: string;
}

/** Stop listing after this many differences: the first ones say enough. */
const MAX_DIFFERENCES = 100;
const COPY_BATCH_BYTES = 4 << 20;

const COMPARED_FIELDS = ['key', 'uid', 'gid', 'cuid', 'cgid', 'mode', 'qbytes', 'qnum', 'cbytes'] as const;

function recordValue(record: QueueRecord, field: (typeof COMPARED_FIELDS)[number]): number {
  const value = record[field];
  return typeof value === 'bigint' ? Number(value) : value;
}

function describeMessage(packed: Buffer, offset: number): string {
  return `type ${packed.readBigInt64LE(offset)}, ${packed.readUInt32LE(offset + 8)} bytes`;
}

/** Compares one live queue's messages with the image's, batch by batch. */
class QueueComparison {
  private live: Buffer = Buffer.alloc(0);
  private liveOffset = 0;
  private nextLiveIndex = 0;
  private liveEnded = false;
  private bufferSize = 64;
  index = 0;
  failed = false;

  constructor(
    private readonly ns: NativeNamespace,
    private readonly id: number,
    private readonly differences: string[],
    /** Raises msgmax so that a message larger than today's can be copied; false when it cannot help. */
    private readonly raiseMsgmax: () => Promise<boolean>,
  ) {}

  private async copyNext() {
    for (;;) {
      try {
        return await this.ns.copyMessages(this.id, this.nextLiveIndex, 16384, COPY_BATCH_BYTES, this.bufferSize);
      } catch (error) {
        if (!(error instanceof IpcCkptError && error.code === 'E2BIG' && (await this.raiseMsgmax()))) throw error;
      }
    }
  }

  private async refill(): Promise<void> {
    const batch = await this.copyNext();
    this.bufferSize = batch.bufferSize;
    this.live = batch.data;
    this.liveOffset = 0;
    this.nextLiveIndex += batch.count;
    if (batch.end || batch.count === 0) this.liveEnded = true;
  }

  async compare(packed: Buffer, count: number): Promise<void> {
    let offset = 0;
    for (let i = 0; i < count && !this.failed; i++, this.index++) {
      const length = PACKED_MESSAGE_HEADER_BYTES + packed.readUInt32LE(offset + 8);
      if (this.liveOffset >= this.live.length && !this.liveEnded) await this.refill();
      if (this.liveOffset >= this.live.length) {
        this.differ(`message ${this.index} (${describeMessage(packed, offset)}) is missing from the live queue`);
        return;
      }
      const liveLength = PACKED_MESSAGE_HEADER_BYTES + this.live.readUInt32LE(this.liveOffset + 8);
      if (packed.compare(this.live, this.liveOffset, this.liveOffset + liveLength, offset, offset + length) !== 0) {
        this.differ(`message ${this.index}: image has ${describeMessage(packed, offset)}, live queue has ${describeMessage(this.live, this.liveOffset)}${liveLength === length ? ' with other bytes' : ''}`);
      }
      offset += length;
      this.liveOffset += liveLength;
    }
  }

  async finish(): Promise<void> {
    if (this.failed) return;
    if (this.liveOffset >= this.live.length && !this.liveEnded) await this.refill();
    if (this.liveOffset < this.live.length) this.differ(`the live queue has more messages than the image's ${this.index}`);
  }

  private differ(text: string): void {
    this.failed = true;
    this.differences.push(`queue ${this.id}: ${text}`);
  }
}

export async function verify(target: Target | undefined, input: string | Readable | AsyncIterable<Buffer>, options: VerifyOptions = {}): Promise<VerifyResult> {
  const resolved = resolveTarget(target);
  throwIfAborted(options.signal);
  // Shared: verify only reads, unless a message is larger than msgmax (then it upgrades, like save).
  const lock = await NamespaceLock.acquire(resolved, 'shared', options);
  const guardian = new RollbackGuardian(resolved, { lockFd: lock.fd });
  try {
    return await verifyLocked(resolved, input, options, lock, guardian);
  } finally {
    await guardian.finish();
    lock.release();
  }
}

async function verifyLocked(resolved: ResolvedTarget, input: string | Readable | AsyncIterable<Buffer>, options: VerifyOptions, lock: NamespaceLock, guardian: RollbackGuardian): Promise<VerifyResult> {
  const source = await openImageSource(input, { guardian, signal: options.signal });
  const ns = await openNamespace(resolved).catch(async (error: unknown) => {
    await source.close();
    throw error;
  });
  const differences: string[] = [];
  const raised = new RaisedSysctls(ns, resolved, guardian);
  const result: VerifyResult = { equal: false, differences, queues: 0, messages: 0, skippedFields: NOT_RESTORABLE_FIELDS, idView: '' };
  const selection = queueSelection(options);
  const posix = selection === 'sysv' ? undefined : new PosixQueueComparison(ns, resolved.label, differences, options, () => idMapping);
  let idMapping: ImageIdMapping | undefined;
  try {
    await posix?.prepare();
    const ids = await namespaceIdsOf(ns, resolved.label);
    result.idView = ids.ownUserNamespace ? 'ids as the namespace sees them (it belongs to ipc-ckpt\'s own user namespace)' : `ids as the namespace sees them, through ${ids.describe()}`;
    const live = new Map<number, QueueStat>(selection === 'posix' ? [] : (await ns.listQueues()).map((q) => [q.id, q]));
    const sysctls = await ns.readSysctls();
    let msgmax = sysctls.msgmax;
    // No live message is larger than its queue's cbytes: raise msgmax that far, once per size.
    const raiseMsgmaxFor = (stat: QueueStat) => async () => {
      if (stat.cbytes <= msgmax) return false;
      if (lock.mode !== 'exclusive') {
        await lock.upgrade(options);
        msgmax = (await ns.readSysctls()).msgmax;
        if (stat.cbytes <= msgmax) return true;
      }
      await raised.set('msgmax', stat.cbytes, msgmax);
      msgmax = stat.cbytes;
      return true;
    };
    let comparison: QueueComparison | undefined;
    for await (const event of decodeImage(source.read(), { strictV16: options.strictV16, reuseBatchBuffer: true })) {
      if (differences.length >= MAX_DIFFERENCES) break;
      throwIfAborted(options.signal);
      guardian.throwIfDead();
      if (event.kind === 'posix-section' || event.kind === 'posix-queue' || event.kind === 'posix-messages') {
        await posix?.onEvent(event);
      } else if (event.kind === 'idMapping') {
        // Before the --posix-only skip: POSIX owners are read through it too.
        idMapping = event.idMapping;
      } else if (selection === 'posix') {
        continue;
      } else if (event.kind === 'limits' && !options.ignoreLimits) {
        compareLimits(event.limits, sysctls, differences);
      } else if (event.kind === 'queue') {
        await comparison?.finish();
        result.queues++;
        const hostStat = live.get(event.queue.id);
        live.delete(event.queue.id);
        if (!hostStat) {
          differences.push(`queue ${event.queue.id} (key 0x${event.queue.key.toString(16)}) is in the image but not in ${resolved.label}`);
          comparison = undefined;
          continue;
        }
        // Both sides as the namespace sees them; an id it cannot see is a difference of its own.
        const liveIds = ids.namespaceView({ uid: hostStat.uid, gid: hostStat.gid, cuid: hostStat.cuid, cgid: hostStat.cgid });
        const imageIds = imageIdsInNamespaceView(ids, { uid: event.queue.uid, gid: event.queue.gid, cuid: event.queue.cuid, cgid: event.queue.cgid }, idMapping);
        if (liveIds.unmapped.length > 0) differences.push(`queue ${event.queue.id}: host ${describeUnmapped(liveIds.unmapped)} of the live queue ${liveIds.unmapped.length > 1 ? 'are' : 'is'} not mapped in ${ids.userNamespace}`);
        if (imageIds.unmapped.length > 0) differences.push(`queue ${event.queue.id}: the image's host ${describeUnmapped(imageIds.unmapped)} ${imageIds.unmapped.length > 1 ? 'are' : 'is'} not mapped in ${ids.userNamespace}`);
        const stat = { ...hostStat, ...liveIds.ids };
        const record = { ...event.queue, ...imageIds.ids };
        for (const field of COMPARED_FIELDS) {
          if (stat[field] !== recordValue(record, field)) {
            const show = (v: number) => (field === 'mode' ? `0${v.toString(8)}` : field === 'key' ? `0x${v.toString(16)}` : String(v));
            differences.push(`queue ${event.queue.id}: ${field} is ${show(stat[field])}, the image has ${show(recordValue(record, field))}`);
          }
        }
        comparison = new QueueComparison(ns, event.queue.id, differences, raiseMsgmaxFor(hostStat));
      } else if (event.kind === 'messages') {
        result.messages += event.count;
        await comparison?.compare(event.packed, event.count);
      }
    }
    await comparison?.finish();
    posix?.finish();
    if (posix) {
      result.queues += posix.queues;
      result.messages += posix.messages;
    }
    for (const extra of options.ignoreOtherQueues ? [] : live.values()) {
      if (differences.length >= MAX_DIFFERENCES) break;
      differences.push(`queue ${extra.id} (key 0x${extra.key.toString(16)}) is in ${resolved.label} but not in the image`);
    }
  } finally {
    const problems = await raised.putBack();
    await ns.close();
    await source.close();
    if (problems.length > 0) differences.push(`putting the namespace's limits back failed: ${problems.join('; ')}`);
  }
  result.equal = differences.length === 0;
  return result;
}

function compareLimits(limits: NamespaceLimits, sysctls: { msgmax: number; msgmnb: number; msgmni: number }, differences: string[]): void {
  const pairs: Array<[string, number, number]> = [
    ['msgmax', sysctls.msgmax, limits.msgCtlmax],
    ['msgmnb', sysctls.msgmnb, limits.msgCtlmnb],
    ['msgmni', sysctls.msgmni, limits.msgCtlmni],
  ];
  for (const [name, live, image] of pairs) {
    if (live !== image) differences.push(`${name} is ${live}, the image has ${image}`);
  }
}
