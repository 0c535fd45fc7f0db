// restore: input -> decoder + validation of the whole image -> plan -> native batch writes in the
// target namespace -> verification. All-or-nothing: a failure removes what this restore created
// and puts every sysctl back (a guardian process does it if this process is killed).
import type { Readable } from 'node:stream';
import { IpcCkptError, throwIfAborted } from './errors';
import { decodeImage, ImageEvent, verifyImage } from './image/decoder';
import { INT32_MAX, IPCMNI } from './image/layout';
import type { ImageHeader, ImageIdMapping, NamespaceLimits, QueueRecord } from './image/model';
import { describeUnmapped, imageIdsToHost, namespaceIdsOf, NamespaceIds } from './id-mapping';
import { ImageSource, openImageSource } from './image-input';
import { openNamespace } from './namespace';
import { MsgSysctlName, IpcSysctls, NativeNamespace, NewQueueRequest, packNewQueues, PACKED_MESSAGE_HEADER_BYTES, QUEUE_STAT_DOUBLES, QueueStat, QueueStatField } from './native';
import { LockOptions, NamespaceLock } from './namespace-lock';
import { RaisedSysctls } from './raised-sysctls';
import { RollbackGuardian } from './rollback-guardian';
import { resolveTarget, ResolvedTarget, Target } from './target';
import { planPosixRestore, PosixImageSummary, PosixQueueRestorer, PosixRestorePlan, queueSelection } from './posix-queues';

/** signal ends the restore between batches (E_INTERRUPTED, rolled back); waitSeconds/onLockWait: the namespace lock. */
export interface RestoreOptions extends LockOptions {
  /** Print the plan, change nothing. */
  dryRun?: boolean;
  /** Leave the target's own msgmax/msgmnb/msgmni instead of the image's. */
  keepLimits?: boolean;
  strictV16?: boolean;
  /** Restore only the image's SysV queues, or only its POSIX queues. */
  sysvOnly?: boolean;
  posixOnly?: boolean;
  onProgress?: (progress: { queuesDone: number; queuesTotal: number; messagesDone: number; messagesTotal: number }) => void;
}

/** Queue fields a userspace restore cannot set: saved in the image, not restored. */
export const NOT_RESTORABLE_FIELDS = ['stime', 'rtime', 'ctime', 'lspid', 'lrpid'] as const;

/** What the validation pass learns of one queue. */
export interface ImageQueue {
  record: QueueRecord;
  /** record.qbytes as a number (the decoder bounds it), converted once. */
  qbytes: number;
  messages: number;
  messageBytes: number;
  largestMessage: number;
}

/** What the validation pass learns of the whole image, in O(queues) memory. */
export interface ImageSummary {
  header: ImageHeader;
  limits: NamespaceLimits;
  /** Present when the image's ids are namespace-relative (the id-mapping record). */
  idMapping?: ImageIdMapping;
  queues: ImageQueue[];
  digest: string;
  /** The messages, ready to send, when they were small enough to keep from the validating pass (no second read). */
  messages?: SendBatch[];
  /** The POSIX section (ipc-ckpt extension), when the image has one. */
  posix?: PosixImageSummary;
}

export interface SysctlChange {
  name: MsgSysctlName;
  from: number;
  to: number;
}

/** A queue's owner and creator ids. */
export interface QueueIds {
  uid: number;
  gid: number;
  cuid: number;
  cgid: number;
}

export interface RestorePlan {
  target: string;
  /** uid/gid/cuid/cgid as the image holds them (the namespace's own view); `host` as the kernel takes them. */
  queues: Array<{ id: number; key: number; mode: number; uid: number; gid: number; cuid: number; cgid: number; host: QueueIds; qbytes: number; messages: number; messageBytes: number }>;
  /** Raised for the duration of the restore, then set to `final`. */
  during: SysctlChange[];
  /** The namespace's limits once restored. */
  final: SysctlChange[];
  conflicts: string[];
  /** What no restore into this target can do (found before any change, like conflicts). */
  beyondLimits: string[];
  /** The POSIX queues to create and the /proc/sys/fs/mqueue changes (lib/posix-queues.ts). */
  posix?: PosixRestorePlan;
}

export interface RestoreSummary {
  plan: RestorePlan;
  dryRun: boolean;
  queues: number;
  messages: number;
  messageBytes: number;
  seconds: number;
  notRestored: readonly string[];
  posixQueues: number;
  posixMessages: number;
}

/** The most a queue's qbytes must be while its messages are sent: msgsnd wants cbytes and qnum to fit. */
function sendingQbytes(queue: ImageQueue): number {
  return Math.max(queue.qbytes, queue.messageBytes, queue.messages);
}

/** Message bytes a restore keeps from its validating pass instead of reading the image a second time. */
const KEEP_MESSAGE_BYTES = 32 << 20;

/**
 * Reads the whole image once, checking everything (integrity record included), keeping the queue list,
 * and the messages too while they add up to at most KEEP_MESSAGE_BYTES.
 */
export async function summarizeImage(source: ImageSource, strictV16 = false): Promise<ImageSummary> {
  let kept: SendBatch[] | undefined = [];
  let keptBytes = 0;
  const keep = (queueIndex: number, packed: Buffer, count: number) => {
    if (!kept) return;
    keptBytes += packed.length;
    if (keptBytes > KEEP_MESSAGE_BYTES) {
      kept = undefined;
      return;
    }
    let last = kept[kept.length - 1];
    if (!last || !last.fits(packed)) kept.push((last = new SendBatch()));
    last.add(queueIndex, packed, count);
  };
  const verified = await verifyImage(source.read(), { strictV16 }, keep);
  return {
    messages: kept,
    header: verified.header,
    limits: verified.limits,
    idMapping: verified.idMapping,
    // The decoder checked that q_qnum and q_cbytes match the messages that follow.
    queues: verified.queues.map(({ queue, largestMessageBytes }) => ({ record: queue, qbytes: Number(queue.qbytes), messages: Number(queue.qnum), messageBytes: Number(queue.cbytes), largestMessage: largestMessageBytes })),
    digest: verified.digest.toString('hex'),
    ...(verified.posix ? { posix: { limits: verified.posix.limits, queues: verified.posix.queues.map((q) => q.queue) } } : {}),
  };
}

const LIMIT_NAMES = ['msgmax', 'msgmnb', 'msgmni'] as const;

function imageLimit(limits: NamespaceLimits, name: (typeof LIMIT_NAMES)[number]): number {
  return name === 'msgmax' ? limits.msgCtlmax : name === 'msgmnb' ? limits.msgCtlmnb : limits.msgCtlmni;
}

/** The host ids a queue of the image is created and owned with in the target; unmapped ones are left as they are. */
function hostIdsOf(record: QueueRecord, image: ImageSummary, ids: NamespaceIds) {
  const { uid, gid, cuid, cgid } = record;
  return imageIdsToHost(ids, { uid, gid, cuid, cgid }, image.idMapping);
}

/** Decides every change before the first one is made; conflicts are all found here. */
export function planRestore(image: ImageSummary, existing: QueueStat[], sysctls: IpcSysctls, target: ResolvedTarget, keepLimits: boolean, ids: NamespaceIds): RestorePlan {
  const conflicts: string[] = [];
  // Translated once a queue: tens of thousands of queues are planned.
  const hostIds = image.queues.map(({ record }) => hostIdsOf(record, image, ids));
  for (const [index, { record }] of image.queues.entries()) {
    const { unmapped } = hostIds[index];
    if (unmapped.length > 0) {
      const view = image.idMapping ? 'as the saved namespace saw them' : 'host ids: the image has no id-mapping record';
      conflicts.push(`id ${record.id} (key 0x${record.key.toString(16).padStart(8, '0')}): ${describeUnmapped(unmapped)} (${view}) have no mapping in ${ids.describe()}, the owner of ${target.label}`);
    }
  }
  const byIndex = new Map(existing.map((q) => [q.index, q]));
  const byKey = new Map(existing.filter((q) => q.key !== 0).map((q) => [q.key, q]));
  const hexOf = (key: number) => `0x${key.toString(16).padStart(8, '0')}`;
  for (const { record } of image.queues) {
    const taken = byIndex.get(record.id % IPCMNI);
    if (taken) conflicts.push(`id ${record.id} (key ${hexOf(record.key)}): slot ${record.id % IPCMNI} is taken by queue ${taken.id} (key ${hexOf(taken.key)})`);
    const sameKey = record.key !== 0 ? byKey.get(record.key) : undefined;
    if (sameKey && sameKey !== taken) conflicts.push(`id ${record.id}: key ${hexOf(record.key)} is already used by queue ${sameKey.id}`);
  }
  const beyondLimits: string[] = [];
  for (const queue of image.queues) {
    if (sendingQbytes(queue) > INT32_MAX) {
      beyondLimits.push(`queue id ${queue.record.id} needs qbytes ${sendingQbytes(queue)}, above ${INT32_MAX}, the most msgmnb can be raised to; only CAP_SYS_RESOURCE could set it`);
    }
  }
  if (existing.length + image.queues.length > IPCMNI) {
    beyondLimits.push(`the target holds ${existing.length} queue(s) and the image ${image.queues.length}: more than the ${IPCMNI} a namespace can hold`);
  }
  let largestMessage = 0;
  let largestQbytes = 0;
  for (const queue of image.queues) {
    largestMessage = Math.max(largestMessage, queue.largestMessage);
    largestQbytes = Math.max(largestQbytes, sendingQbytes(queue));
  }
  const needed: Record<(typeof LIMIT_NAMES)[number], number> = {
    msgmax: largestMessage,
    msgmnb: largestQbytes,
    msgmni: existing.length + image.queues.length,
  };
  const during: SysctlChange[] = [];
  const final: SysctlChange[] = [];
  for (const name of LIMIT_NAMES) {
    const current = sysctls[name];
    const duringValue = Math.max(current, needed[name]);
    if (duringValue !== current) during.push({ name, from: current, to: duringValue });
    const finalValue = keepLimits ? current : imageLimit(image.limits, name);
    if (finalValue !== duringValue) final.push({ name, from: duringValue, to: finalValue });
  }
  return {
    target: target.label,
    queues: image.queues.map((q, index) => ({
      id: q.record.id,
      key: q.record.key,
      mode: q.record.mode,
      uid: q.record.uid,
      gid: q.record.gid,
      cuid: q.record.cuid,
      cgid: q.record.cgid,
      host: hostIds[index].ids,
      qbytes: Number(q.record.qbytes),
      messages: q.messages,
      messageBytes: q.messageBytes,
    })),
    during,
    final,
    conflicts,
    beyondLimits,
  };
}

/** Where tests make a restore fail midway: IPC_CKPT_TEST_FAULT=after-queue:N fails once N queues exist. */
function injectedFaultAt(): number | undefined {
  const fault = /^after-queue:(\d+)$/.exec(process.env.IPC_CKPT_TEST_FAULT ?? '');
  return fault ? Number(fault[1]) : undefined;
}

/** Queues per createQueues crossing (and per guardian registration line). */
const CREATE_BATCH_QUEUES = 2048;
/** Packed bytes per sendQueueMessages crossing; a decoded batch at least this large is sent on its own. */
const SEND_BATCH_BYTES = 1 << 20;

/** A queue's create request, with the creator and owner ids the plan translated for the target. */
function newQueueRequest(queue: ImageQueue, host: QueueIds): NewQueueRequest {
  const { record } = queue;
  return { key: record.key, id: record.id, mode: record.mode, cuid: host.cuid, cgid: host.cgid, uid: host.uid, gid: host.gid, qbytes: sendingQbytes(queue) };
}

function corruptBetweenPasses(source: ImageSource, defect?: IpcCkptError): IpcCkptError {
  const why = defect ? `: ${defect.message}` : '';
  return new IpcCkptError('E_IMAGE_CORRUPT', `image ${source.label} changed between validation and restore${why}`, defect ? { offset: defect.offset, cause: defect } : {});
}

/**
 * A second read of the validated image. A leased source's bytes are the validated ones as long as its lease
 * holds, so that read is not hashed again; the lease (or else the digest) is checked at its 'end'.
 */
async function* rereadImage(source: ImageSource, options: { strictV16?: boolean; reuseBatchBuffer?: boolean }): AsyncGenerator<ImageEvent> {
  try {
    yield* decodeImage(source.read(), { ...options, unhashed: source.leased });
  } catch (error) {
    // It decoded once: a defect now is a change since.
    if (error instanceof IpcCkptError && error.code === 'E_IMAGE_CORRUPT') throw corruptBetweenPasses(source, error);
    throw error;
  }
}

/** At a second read's 'end': throws unless its bytes are provably those validated. */
function checkReread(source: ImageSource, image: ImageSummary, end: { digest: Buffer }): void {
  if (end.digest.toString('hex') !== image.digest) throw corruptBetweenPasses(source);
  if (source.leased && !source.stillUnchanged()) {
    throw new IpcCkptError('E_IMAGE_CORRUPT', `image ${source.label} was opened for writing during the restore: it may differ from what was validated`);
  }
}

/** Messages of several queues gathered into one packed buffer, so many small queues cost one crossing. */
class SendBatch {
  /** Indexes into ImageSummary.queues, one per run of messages. */
  readonly queueIndexes: number[] = [];
  readonly counts: number[] = [];
  private buffer = Buffer.allocUnsafe(0);
  bytes = 0;
  bodyBytes = 0;

  add(queueIndex: number, packed: Buffer, count: number): void {
    if (this.queueIndexes[this.queueIndexes.length - 1] === queueIndex) this.counts[this.counts.length - 1] += count;
    else {
      this.queueIndexes.push(queueIndex);
      this.counts.push(count);
    }
    if (this.bytes + packed.length > this.buffer.length) {
      const grown = Buffer.allocUnsafe(Math.max(this.bytes + packed.length, Math.min(SEND_BATCH_BYTES, this.buffer.length * 2 || 64 << 10)));
      this.buffer.copy(grown, 0, 0, this.bytes);
      this.buffer = grown;
    }
    packed.copy(this.buffer, this.bytes);
    this.bytes += packed.length;
    this.bodyBytes += packed.length - count * PACKED_MESSAGE_HEADER_BYTES;
  }

  get empty(): boolean {
    return this.queueIndexes.length === 0;
  }

  /** An empty batch takes anything; else up to SEND_BATCH_BYTES in all. */
  fits(packed: Buffer): boolean {
    return this.empty || this.bytes + packed.length <= SEND_BATCH_BYTES;
  }

  get packed(): Buffer {
    return this.buffer.subarray(0, this.bytes);
  }
}

/** One restore's changes to the target, undone by rollback(). */
class RestoreRun {
  private readonly created: number[] = [];
  readonly sysctls: RaisedSysctls;
  private posix: PosixQueueRestorer | undefined;
  private plan: RestorePlan | undefined;
  messages = 0;
  messageBytes = 0;

  constructor(
    private readonly ns: NativeNamespace,
    private readonly target: ResolvedTarget,
    private readonly options: RestoreOptions,
    private readonly guardian: RollbackGuardian,
  ) {
    this.sysctls = new RaisedSysctls(ns, target, guardian);
  }

  get posixMessages(): number {
    return this.posix?.messages ?? 0;
  }

  /** Between batches: a signal or the guardian's death ends the restore here (and it rolls back). */
  private checkpoint(): void {
    throwIfAborted(this.options.signal);
    this.guardian.throwIfDead();
  }

  private setSysctl(change: SysctlChange): Promise<void> {
    return this.sysctls.set(change.name, change.to, change.from);
  }

  async apply(plan: RestorePlan, image: ImageSummary, source: ImageSource): Promise<void> {
    this.plan = plan;
    // createQueues writes msg_next_id before each msgget: if we die between the two, the guardian unsets it.
    if (image.queues.length > 0) await this.guardian.registerNextIdReset();
    for (const change of plan.during) await this.setSysctl(change);
    this.report(image, 0);
    const sysv = queueSelection(this.options) !== 'posix';
    if (sysv) {
      await this.createQueues(image);
      await this.sendMessages(image, source);
      // Most queues need nothing more: only those whose qbytes was raised for the sends cost a crossing.
      for (const [index, queue] of image.queues.entries()) if (sendingQbytes(queue) !== queue.qbytes) await this.putQbytesBack(queue, this.hostIds(index));
    }
    for (const change of plan.final) await this.setSysctl(change);
    if (plan.posix) await this.restorePosixQueues(plan.posix, image, source);
    if (sysv) await this.checkCreated(image);
  }

  /** The POSIX section (lib/posix-queues.ts), in a pass of its own over the validated image. */
  private async restorePosixQueues(plan: PosixRestorePlan, image: ImageSummary, source: ImageSource): Promise<void> {
    const { limitWriter } = await namespaceIdsOf(this.ns, this.target.label);
    this.posix = new PosixQueueRestorer(this.ns, () => this.guardian, plan, limitWriter);
    for await (const event of rereadImage(source, { strictV16: this.options.strictV16 })) {
      if (event.kind === 'posix-section' || event.kind === 'posix-queue' || event.kind === 'posix-messages') await this.posix.apply(event);
      else if (event.kind === 'end') checkReread(source, image, event);
    }
    await this.posix.finish();
  }

  private report(image: ImageSummary, queuesDone: number): void {
    this.options.onProgress?.({ queuesTotal: image.queues.length, messagesTotal: image.queues.reduce((n, q) => n + q.messages, 0), queuesDone, messagesDone: this.messages });
  }

  /**
   * Every queue of the image, in batches of one crossing each. The guardian learns batch k+1 while batch k
   * is created, and each batch before its own msgget; what a failed batch did not make is forgotten again.
   */
  private async createQueues(image: ImageSummary): Promise<void> {
    const faultAt = injectedFaultAt();
    const batches: ImageQueue[][] = [];
    const requests: NewQueueRequest[][] = [];
    for (let start = 0; start < image.queues.length; ) {
      // An injected fault ends a batch where it strikes, so it fails with exactly that many queues made.
      const size = faultAt !== undefined && faultAt > start ? Math.min(CREATE_BATCH_QUEUES, faultAt - start) : CREATE_BATCH_QUEUES;
      const batch = image.queues.slice(start, start + size);
      batches.push(batch);
      requests.push(batch.map((queue, i) => newQueueRequest(queue, this.hostIds(start + i))));
      start += size;
    }
    const register = (batch: ImageQueue[] | undefined) => {
      const registration = batch ? this.guardian.registerQueues(batch.map((q) => ({ id: q.record.id, key: q.record.key }))) : undefined;
      // Awaited later: a guardian that dies meanwhile must fail the run there, not crash it as an unhandled rejection.
      registration?.catch(() => undefined);
      return registration;
    };
    let registered = register(batches[0]);
    for (let b = 0; b < batches.length; b++) {
      const batch = batches[b];
      await registered;
      const next = register(batches[b + 1]);
      registered = next;
      let result;
      try {
        result = await this.ns.createQueues(packNewQueues(requests[b]));
      } catch (error) {
        // Not a per-queue failure: the batch did not run. Nothing of it, nor of the next batch, is ours.
        await next?.catch(() => undefined);
        await this.guardian.forgetQueues([...batch, ...(batches[b + 1] ?? [])].map((q) => q.record.id)).catch(() => undefined);
        throw error;
      }
      this.created.push(...result.created);
      if (result.failure) {
        const made = new Set(result.created);
        const notMade = batch.filter((q) => !made.has(q.record.id)).map((q) => q.record.id);
        await next;
        await this.guardian.forgetQueues([...notMade, ...(batches[b + 1] ?? []).map((q) => q.record.id)]);
        const { code, errno, syscall, message } = result.failure;
        throw new IpcCkptError(code, message, { errno, syscall });
      }
      if (faultAt !== undefined && this.created.length === faultAt) {
        await next;
        await this.guardian.forgetQueues((batches[b + 1] ?? []).map((q) => q.record.id));
        throw new IpcCkptError('E_INTERNAL', `injected fault after ${faultAt} queue(s) (IPC_CKPT_TEST_FAULT)`);
      }
      if (this.options.signal?.aborted || this.guardian.dead) {
        // The next batch is registered but will not be made: the guardian forgets it before we stop.
        await next?.catch(() => undefined);
        await this.guardian.forgetQueues((batches[b + 1] ?? []).map((q) => q.record.id));
      }
      this.checkpoint();
    }
  }

  /** Sends one gathered batch; resolves once it is in. */
  private async sendBatch(image: ImageSummary, batch: SendBatch): Promise<void> {
    const ids = batch.queueIndexes.map((index) => image.queues[index].record.id);
    this.messages += await this.ns.sendQueueMessages(ids, batch.counts, batch.packed);
    this.messageBytes += batch.bodyBytes;
    this.report(image, batch.queueIndexes[batch.queueIndexes.length - 1]);
  }

  /** The validated image's messages: kept from the validating pass, or read again; small queues' messages share a crossing. */
  private async sendMessages(image: ImageSummary, source: ImageSource): Promise<void> {
    if (image.messages) {
      for (const batch of image.messages) {
        await this.sendBatch(image, batch);
        this.checkpoint();
      }
      return;
    }
    let index = -1;
    let queueId = -1;
    // One batch is sent on the namespace thread while the next one is decoded (the addon copies it on the call).
    let sending: Promise<void> | undefined;
    let batch = new SendBatch();
    const send = async (bodyBytes: number, call: Promise<number>) => {
      this.messages += await call;
      this.messageBytes += bodyBytes;
      this.report(image, Math.max(0, index));
    };
    const flush = async () => {
      if (batch.empty) return;
      await sending;
      sending = this.sendBatch(image, batch);
      batch = new SendBatch();
    };
    try {
      for await (const event of rereadImage(source, { strictV16: this.options.strictV16, reuseBatchBuffer: true })) {
        this.checkpoint();
        if (event.kind === 'queue') {
          const queue = image.queues[++index];
          if (!queue || queue.record.id !== event.queue.id) throw corruptBetweenPasses(source);
          queueId = event.queue.id;
        } else if (event.kind === 'messages' && index >= 0) {
          if (event.packed.length * 4 >= SEND_BATCH_BYTES) {
            await flush();
            await sending;
            const bodyBytes = event.packed.length - event.count * PACKED_MESSAGE_HEADER_BYTES;
            sending = send(bodyBytes, this.ns.sendMessages(queueId, event.packed, event.count));
          } else {
            if (!batch.fits(event.packed)) await flush();
            batch.add(index, event.packed, event.count);
          }
        } else if (event.kind === 'end') {
          checkReread(source, image, event);
        }
      }
      await flush();
      await sending;
    } catch (error) {
      await sending?.catch(() => undefined);
      throw error;
    }
    if (index !== image.queues.length - 1) throw corruptBetweenPasses(source);
  }

  /** The plan's host ids of the index-th queue (translated and checked before any change). */
  private hostIds(index: number): QueueIds {
    const planned = this.plan?.queues[index];
    if (!planned) throw new IpcCkptError('E_IMAGE_CORRUPT', 'the image changed between validation and restore');
    return planned.host;
  }

  /** A queue whose qbytes was raised so its messages could be sent gets the image's qbytes back. */
  private async putQbytesBack(queue: ImageQueue, host: QueueIds): Promise<void> {
    const { record } = queue;
    await this.ns.setQueue(record.id, { uid: host.uid, gid: host.gid, mode: record.mode, qbytes: queue.qbytes });
  }

  /** Every created queue holds what the image says, field by restorable field (one listing of the target). */
  private async checkCreated(image: ImageSummary): Promise<void> {
    const stats = await this.ns.listQueueStats();
    const listed = new Map<number, number>();
    for (let o = 0; o < stats.length; o += QUEUE_STAT_DOUBLES) listed.set(stats[o + QueueStatField.id], o);
    for (const [index, { record, qbytes, messages, messageBytes }] of image.queues.entries()) {
      const host = this.hostIds(index);
      const o = listed.get(record.id);
      if (o === undefined) throw new IpcCkptError('E_VERIFY', `restored queue ${record.id} is missing from the target`);
      // Read straight from the listing, field by field: tens of thousands of queues are checked.
      const key = stats[o + QueueStatField.key];
      const uid = stats[o + QueueStatField.uid];
      const gid = stats[o + QueueStatField.gid];
      const cuid = stats[o + QueueStatField.cuid];
      const cgid = stats[o + QueueStatField.cgid];
      const mode = stats[o + QueueStatField.mode];
      const qbytesNow = stats[o + QueueStatField.qbytes];
      const qnum = stats[o + QueueStatField.qnum];
      const cbytes = stats[o + QueueStatField.cbytes];
      const wrong =
        key !== record.key ? ['key', key, record.key] :
        uid !== host.uid ? ['uid', uid, host.uid] :
        gid !== host.gid ? ['gid', gid, host.gid] :
        cuid !== host.cuid ? ['cuid', cuid, host.cuid] :
        cgid !== host.cgid ? ['cgid', cgid, host.cgid] :
        mode !== record.mode ? ['mode', mode, record.mode] :
        qbytesNow !== qbytes ? ['qbytes', qbytesNow, qbytes] :
        qnum !== messages ? ['qnum', qnum, messages] :
        cbytes !== messageBytes ? ['cbytes', cbytes, messageBytes] : undefined;
      if (wrong) throw new IpcCkptError('E_VERIFY', `restored queue ${record.id} has ${wrong[0]} ${wrong[1]}, the image says ${wrong[2]}`);
    }
  }

  /** Removes what this restore created and puts every sysctl back, newest first. */
  async rollback(): Promise<string[]> {
    const problems: string[] = (await this.posix?.rollback()) ?? [];
    const removed: number[] = [];
    for (const id of this.created.reverse()) {
      try {
        await this.ns.removeQueue(id);
        removed.push(id);
      } catch (error) {
        problems.push(`queue ${id}: ${(error as Error).message}`);
      }
    }
    try {
      if (removed.length > 0) await this.guardian.forgetQueues(removed);
    } catch (error) {
      problems.push(`telling the rollback guardian: ${(error as Error).message}`);
    }
    problems.push(...(await this.sysctls.putBack()));
    return problems;
  }
}

/** Restores an image (a file path, '-' for stdin, or a stream) into the target namespace. */
export async function restore(target: Target | undefined, input: string | Readable | AsyncIterable<Buffer>, options: RestoreOptions = {}): Promise<RestoreSummary> {
  const started = process.hrtime.bigint();
  const resolved = resolveTarget(target);
  throwIfAborted(options.signal);
  // Held from before the plan to the end: two restores into one target cannot plan the same free slots.
  const lock = await NamespaceLock.acquire(resolved, options.dryRun ? 'shared' : 'exclusive', options);
  const guardian = new RollbackGuardian(resolved, { lockFd: lock.fd });
  try {
    return await restoreLocked(resolved, input, options, guardian, started);
  } finally {
    await guardian.finish();
    lock.release();
  }
}

/** The target's session and what the plan reads of it, read on the namespace thread while the main thread validates the image. */
async function readTarget(ns: NativeNamespace, label: string) {
  const [ids, queues, sysctls] = await Promise.all([namespaceIdsOf(ns, label), ns.listQueues(), ns.readSysctls()]);
  return { ns, ids, queues, sysctls };
}

async function restoreLocked(resolved: ResolvedTarget, input: string | Readable | AsyncIterable<Buffer>, options: RestoreOptions, guardian: RollbackGuardian, started: bigint): Promise<RestoreSummary> {
  // Opened and read (nothing is changed) while the image is validated; its failures still come after the image's.
  const opening = openNamespace(resolved);
  const reading = opening.then((ns) => readTarget(ns, resolved.label));
  reading.catch(() => undefined);
  try {
    return await restoreOpened(resolved, input, options, guardian, started, reading);
  } finally {
    await opening.then((ns) => ns.close(), () => undefined);
  }
}

async function restoreOpened(
  resolved: ResolvedTarget,
  input: string | Readable | AsyncIterable<Buffer>,
  options: RestoreOptions,
  guardian: RollbackGuardian,
  started: bigint,
  reading: ReturnType<typeof readTarget>,
): Promise<RestoreSummary> {
  const source = await openImageSource(input, { guardian, signal: options.signal, leaseForRereads: true });
  try {
    const image = await summarizeImage(source, options.strictV16);
    const target = await reading;
    const { ns } = target;
    const selection = queueSelection(options);
    const sysvImage = selection === 'posix' ? { ...image, queues: [] } : image;
    const { ids } = target;
    const plan = planRestore(sysvImage, target.queues, target.sysctls, resolved, selection === 'posix' || (options.keepLimits ?? false), ids);
    if (selection !== 'sysv' && image.posix) {
      plan.posix = planPosixRestore(image.posix, await ns.listPosixQueues(), await ns.readMqueueLimits(), options.keepLimits ?? false, { ids, idMapping: image.idMapping, label: resolved.label });
      plan.conflicts.push(...plan.posix.conflicts);
    }
    if (plan.conflicts.length > 0) {
      throw new IpcCkptError('E_CONFLICT', `cannot restore into ${resolved.label}, nothing was changed:\n  ${plan.conflicts.join('\n  ')}`);
    }
    if (plan.beyondLimits.length > 0) {
      throw new IpcCkptError('E_IMAGE_LIMIT', `cannot restore into ${resolved.label}, nothing was changed:\n  ${plan.beyondLimits.join('\n  ')}`);
    }
    const summary: RestoreSummary = { plan, dryRun: options.dryRun ?? false, queues: 0, messages: 0, messageBytes: 0, seconds: 0, notRestored: NOT_RESTORABLE_FIELDS, posixQueues: 0, posixMessages: 0 };
    if (!options.dryRun) {
      const run = new RestoreRun(ns, resolved, options, guardian);
      try {
        await run.apply(plan, image, source);
      } catch (error) {
        const problems = await run.rollback();
        if (problems.length > 0 && error instanceof Error) {
          error.message += `\nrolling back also failed:\n  ${problems.join('\n  ')}`;
        }
        throw error;
      }
      summary.queues = image.queues.length;
      summary.messages = run.messages;
      summary.messageBytes = run.messageBytes;
      summary.posixQueues = plan.posix?.queues.length ?? 0;
      summary.posixMessages = run.posixMessages;
    }
    summary.seconds = Number(process.hrtime.bigint() - started) / 1e9;
    return summary;
  } finally {
    await source.close();
  }
}
