// restore: input -> decoder + validation of the whole image -> plan -> native batch writes in the
// target namespace -> verification. All-or-nothing: a failure removes what this restore created
// and puts every sysctl back (a guardian process does it if this process is killed).
import type { Readable } from 'node:stream';
import { IpcCkptError } from './errors';
import { decodeImage, verifyImage } from './image/decoder';
import { INT32_MAX, IPCMNI } from './image/layout';
import type { ImageHeader, ImageIdMapping, NamespaceLimits, QueueRecord } from './image/model';
import { describeUnmapped, imageIdsToHost, namespaceIdsOf, NamespaceIds } from './id-mapping';
import { ImageSource, openImageSource } from './image-input';
import { openNamespace } from './namespace';
import { MsgSysctlName, IpcSysctls, NativeNamespace, PACKED_MESSAGE_HEADER_BYTES, QueueStat } from './native';
import { RaisedSysctls } from './raised-sysctls';
import { resolveTarget, ResolvedTarget, Target } from './target';
import { planPosixRestore, PosixImageSummary, PosixQueueRestorer, PosixRestorePlan, queueSelection } from './posix-queues';

export interface RestoreOptions {
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
  return Math.max(Number(queue.record.qbytes), queue.messageBytes, queue.messages);
}

/** Reads the whole image once, checking everything (integrity record included), keeping only the queue list. */
export async function summarizeImage(source: ImageSource, strictV16 = false): Promise<ImageSummary> {
  const verified = await verifyImage(source.read(), { strictV16 });
  return {
    header: verified.header,
    limits: verified.limits,
    idMapping: verified.idMapping,
    // The decoder checked that q_qnum and q_cbytes match the messages that follow.
    queues: verified.queues.map(({ queue, largestMessageBytes }) => ({ record: queue, messages: Number(queue.qnum), messageBytes: Number(queue.cbytes), largestMessage: largestMessageBytes })),
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
  for (const { record } of image.queues) {
    const { unmapped } = hostIdsOf(record, image, ids);
    if (unmapped.length > 0) {
      const view = image.idMapping ? 'as the saved namespace saw them' : 'host ids: the image has no id-mapping record';
      conflicts.push(`id ${record.id} (key 0x${record.key.toString(16).padStart(8, '0')}): ${describeUnmapped(unmapped)} (${view}) have no mapping in ${ids.describe()}, the owner of ${target.label}`);
    }
  }
  const byIndex = new Map(existing.map((q) => [q.index, q]));
  const byKey = new Map(existing.filter((q) => q.key !== 0).map((q) => [q.key, q]));
  for (const { record } of image.queues) {
    const hex = `0x${record.key.toString(16).padStart(8, '0')}`;
    const taken = byIndex.get(record.id % IPCMNI);
    if (taken) conflicts.push(`id ${record.id} (key ${hex}): slot ${record.id % IPCMNI} is taken by queue ${taken.id} (key 0x${taken.key.toString(16).padStart(8, '0')})`);
    const sameKey = record.key !== 0 ? byKey.get(record.key) : undefined;
    if (sameKey && sameKey !== taken) conflicts.push(`id ${record.id}: key ${hex} is already used by queue ${sameKey.id}`);
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
  const needed: Record<(typeof LIMIT_NAMES)[number], number> = {
    msgmax: Math.max(0, ...image.queues.map((q) => q.largestMessage)),
    msgmnb: Math.max(0, ...image.queues.map(sendingQbytes)),
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
    queues: image.queues.map((q) => ({
      id: q.record.id,
      key: q.record.key,
      mode: q.record.mode,
      uid: q.record.uid,
      gid: q.record.gid,
      cuid: q.record.cuid,
      cgid: q.record.cgid,
      host: hostIdsOf(q.record, image, ids).ids,
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
function injectedFault(queuesCreated: number): void {
  const fault = /^after-queue:(\d+)$/.exec(process.env.IPC_CKPT_TEST_FAULT ?? '');
  if (fault && queuesCreated === Number(fault[1])) {
    throw new IpcCkptError('E_INTERNAL', `injected fault after ${queuesCreated} queue(s) (IPC_CKPT_TEST_FAULT)`);
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
    target: ResolvedTarget,
    private readonly options: RestoreOptions,
  ) {
    this.sysctls = new RaisedSysctls(ns, target);
  }

  get posixMessages(): number {
    return this.posix?.messages ?? 0;
  }

  private get guardian() {
    return this.sysctls.guardian;
  }

  private setSysctl(change: SysctlChange): Promise<void> {
    return this.sysctls.set(change.name, change.to, change.from);
  }

  async apply(plan: RestorePlan, image: ImageSummary, source: ImageSource): Promise<void> {
    this.plan = plan;
    for (const change of plan.during) await this.setSysctl(change);
    const sysv = queueSelection(this.options) !== 'posix';
    if (plan.posix) this.posix = new PosixQueueRestorer(this.ns, () => this.guardian, plan.posix);
    const total = { queuesTotal: image.queues.length, messagesTotal: image.queues.reduce((n, q) => n + q.messages, 0) };
    let index = -1;
    let queue: ImageQueue | undefined;
    // One batch is sent on the namespace thread while the next one is decoded (the addon copies it on the call).
    let sending: Promise<void> | undefined;
    const sent = async (bodyBytes: number, call: Promise<number>) => {
      this.messages += await call;
      this.messageBytes += bodyBytes;
      this.options.onProgress?.({ ...total, queuesDone: index, messagesDone: this.messages });
    };
    try {
      for await (const event of decodeImage(source.read(), { strictV16: this.options.strictV16, reuseBatchBuffer: true })) {
        if (event.kind === 'posix-section' || event.kind === 'posix-queue' || event.kind === 'posix-messages') {
          await sending;
          sending = undefined;
          if (queue) await this.finishQueue(queue, this.hostIds(index));
          queue = undefined;
          await this.posix?.apply(event);
        } else if (!sysv && (event.kind === 'queue' || event.kind === 'messages')) {
          continue;
        } else if (event.kind === 'queue') {
          await sending;
          sending = undefined;
          if (queue) await this.finishQueue(queue, this.hostIds(index));
          queue = image.queues[++index];
          await this.createQueue(queue, event.queue, this.hostIds(index));
        } else if (event.kind === 'messages' && queue) {
          await sending;
          const bodyBytes = event.packed.length - event.count * PACKED_MESSAGE_HEADER_BYTES;
          sending = sent(bodyBytes, this.ns.sendMessages(queue.record.id, event.packed, event.count));
        } else if (event.kind === 'end' && event.digest.toString('hex') !== image.digest) {
          throw new IpcCkptError('E_IMAGE_CORRUPT', `image ${source.label} changed between validation and restore`);
        }
      }
      await sending;
    } catch (error) {
      await sending?.catch(() => undefined);
      throw error;
    }
    if (queue) await this.finishQueue(queue, this.hostIds(index));
    if (index !== image.queues.length - 1) throw new IpcCkptError('E_IMAGE_CORRUPT', `image ${source.label} changed between validation and restore`);
    for (const change of plan.final) await this.setSysctl(change);
    await this.posix?.finish();
    if (sysv) await this.checkCreated(image);
  }

  /** The plan's host ids of the index-th queue (translated and checked before any change). */
  private hostIds(index: number): QueueIds {
    const planned = this.plan?.queues[index];
    if (!planned) throw new IpcCkptError('E_IMAGE_CORRUPT', 'the image changed between validation and restore');
    return planned.host;
  }

  private async createQueue(queue: ImageQueue | undefined, record: QueueRecord, host: QueueIds): Promise<void> {
    if (!queue || queue.record.id !== record.id) throw new IpcCkptError('E_IMAGE_CORRUPT', 'the image changed between validation and restore');
    // Registered before msgget: a kill between the two must not leave the queue behind.
    await this.guardian.registerQueue(record.id, record.key);
    let id: number;
    try {
      id = await this.ns.createQueue({ key: record.key, id: record.id, mode: record.mode, cuid: host.cuid, cgid: host.cgid });
    } catch (error) {
      // Not ours (taken meanwhile, or removed by the addon on an id mismatch): the guardian must not remove it.
      await this.guardian.forgetQueue(record.id);
      throw error;
    }
    this.created.push(id);
    injectedFault(this.created.length);
    await this.ns.setQueue(id, { uid: host.uid, gid: host.gid, mode: record.mode, qbytes: sendingQbytes(queue) });
  }

  private async finishQueue(queue: ImageQueue, host: QueueIds): Promise<void> {
    const { record } = queue;
    if (sendingQbytes(queue) !== Number(record.qbytes)) {
      await this.ns.setQueue(record.id, { uid: host.uid, gid: host.gid, mode: record.mode, qbytes: Number(record.qbytes) });
    }
  }

  /** Every created queue holds what the image says, field by restorable field. */
  private async checkCreated(image: ImageSummary): Promise<void> {
    for (const [index, { record, messages, messageBytes }] of image.queues.entries()) {
      const stat = await this.ns.statQueue(record.id);
      const expected = { key: record.key, ...this.hostIds(index), mode: record.mode, qbytes: Number(record.qbytes), qnum: messages, cbytes: messageBytes };
      for (const [field, value] of Object.entries(expected)) {
        const got = stat[field as keyof QueueStat];
        if (got !== value) throw new IpcCkptError('E_VERIFY', `restored queue ${record.id} has ${field} ${String(got)}, the image says ${value}`);
      }
    }
  }

  /** Removes what this restore created and puts every sysctl back, newest first. */
  async rollback(): Promise<string[]> {
    const problems: string[] = (await this.posix?.rollback()) ?? [];
    for (const id of this.created.reverse()) {
      try {
        await this.ns.removeQueue(id);
        await this.guardian.forgetQueue(id);
      } catch (error) {
        problems.push(`queue ${id}: ${(error as Error).message}`);
      }
    }
    problems.push(...(await this.sysctls.putBack()));
    return problems;
  }
}

/** Restores an image (a file path, '-' for stdin, or a stream) into the target namespace. */
export async function restore(target: Target | undefined, input: string | Readable | AsyncIterable<Buffer>, options: RestoreOptions = {}): Promise<RestoreSummary> {
  const started = process.hrtime.bigint();
  const resolved = resolveTarget(target);
  const source = await openImageSource(input);
  try {
    const image = await summarizeImage(source, options.strictV16);
    const ns = await openNamespace(resolved);
    try {
      const selection = queueSelection(options);
      const sysvImage = selection === 'posix' ? { ...image, queues: [] } : image;
      const plan = planRestore(sysvImage, await ns.listQueues(), await ns.readSysctls(), resolved, selection === 'posix' || (options.keepLimits ?? false), await namespaceIdsOf(ns, resolved.label));
      if (selection !== 'sysv' && image.posix) {
        plan.posix = planPosixRestore(image.posix, await ns.listPosixQueues(), await ns.readMqueueLimits(), options.keepLimits ?? false);
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
        const run = new RestoreRun(ns, resolved, options);
        try {
          await run.apply(plan, image, source);
        } catch (error) {
          const problems = await run.rollback();
          await run.sysctls.finish();
          if (problems.length > 0 && error instanceof Error) {
            error.message += `\nrolling back also failed:\n  ${problems.join('\n  ')}`;
          }
          throw error;
        }
        await run.sysctls.finish();
        summary.queues = image.queues.length;
        summary.messages = run.messages;
        summary.messageBytes = run.messageBytes;
        summary.posixQueues = plan.posix?.queues.length ?? 0;
        summary.posixMessages = run.posixMessages;
      }
      summary.seconds = Number(process.hrtime.bigint() - started) / 1e9;
      return summary;
    } finally {
      await ns.close();
    }
  } finally {
    await source.close();
  }
}
